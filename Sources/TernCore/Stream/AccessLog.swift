import Glibc
import Synchronization

/// Access logs (a listener's `access_logs: [{log_path, log_format}]`, MOSN's `%variable%` format):
/// one line per request, in MOSN's variable names.
///
/// The work is split so no worker ever waits on a disk:
/// - at config load a format is compiled into `AccessLogField`s (`AccessLogFormat.parse`);
/// - a session fills one `AccessLogRecord` per request (facts only: clocks, codes, the few header
///   values the listener's formats name, copied while the head is still in the input);
/// - when the request ends, the worker formats the line into its own per-file buffer
///   (`AccessLogOutput`, no lock), which goes to the process's `AccessLogWriter` thread when it
///   passes 32 KB or 100 ms after its first line; that thread does the write(2) calls and reopens
///   the files on SIGUSR1. A writer that falls behind by more than `maxPendingBytes` drops whole
///   buffers and counts their lines, rather than block a worker or grow without bound.

/// One piece of a compiled format: literal text, or a value of the request.
public enum AccessLogField: Sendable, Equatable {
    case text([UInt8])
    case startTime, connectionID, upstreamConnectionID
    case requestReceivedDuration, responseReceivedDuration, requestFinishedDuration, processTimeDuration, duration
    case bytesSent, bytesReceived, protocolName, responseCode, responseFlag
    case upstreamLocalAddress, downstreamLocalAddress, downstreamRemoteAddress, upstreamHost, upstreamCluster
    case upstreamTransportFailureReason, listenerName
    /// A value copied from the request or the response while its head was readable, by slot in
    /// the record's captures (`AccessLogCaptures`).
    case captured(Int)
    /// A name MOSN does not define either (MOSN writes "-" for it, as here; the config load warns).
    case unknown
}

/// One field of a compiled format, as the formatter reads it.
struct AccessLogOp: Sendable {
    enum Kind: UInt8, Sendable {
        case text, startTime, connectionID, upstreamConnectionID
        case requestReceivedDuration, responseReceivedDuration, requestFinishedDuration, processTimeDuration
        case bytesSent, bytesReceived, protocolName, responseCode, responseFlag
        case upstreamLocalAddress, downstreamLocalAddress, downstreamRemoteAddress, upstreamHost, upstreamCluster
        case upstreamTransportFailureReason, listenerName, captured, unknown

        init(_ field: AccessLogField) {
            switch field {
            case .text: self = .text
            case .startTime: self = .startTime
            case .connectionID: self = .connectionID
            case .upstreamConnectionID: self = .upstreamConnectionID
            case .requestReceivedDuration: self = .requestReceivedDuration
            case .responseReceivedDuration: self = .responseReceivedDuration
            case .requestFinishedDuration, .duration: self = .requestFinishedDuration
            case .processTimeDuration: self = .processTimeDuration
            case .bytesSent: self = .bytesSent
            case .bytesReceived: self = .bytesReceived
            case .protocolName: self = .protocolName
            case .responseCode: self = .responseCode
            case .responseFlag: self = .responseFlag
            case .upstreamLocalAddress: self = .upstreamLocalAddress
            case .downstreamLocalAddress: self = .downstreamLocalAddress
            case .downstreamRemoteAddress: self = .downstreamRemoteAddress
            case .upstreamHost: self = .upstreamHost
            case .upstreamCluster: self = .upstreamCluster
            case .upstreamTransportFailureReason: self = .upstreamTransportFailureReason
            case .listenerName: self = .listenerName
            case .captured: self = .captured
            case .unknown: self = .unknown
            }
        }
    }
    let kind: Kind
    /// Text: offset and length in the format's text; captured: the slot.
    let start: Int32
    let count: Int32
}

/// What a request's record copies out of the request and response heads for a listener's formats.
public struct AccessLogCaptures: Sendable, Equatable {
    public enum Item: Sendable, Equatable, Hashable {
        case method, path, uri, query, host
        /// `SOFA-TraceId` (HTTP) or `rpc_trace_context.sofaTraceId` (bolt): MOSN's trace id without its tracer.
        case traceID
        case requestHeader([UInt8])
        case responseHeader([UInt8])
    }
    /// In slot order.
    public private(set) var items: [Item] = []
    public var requestItems: Int { items.count { if case .responseHeader = $0 { return false } else { return true } } }
    public var capturesResponse: Bool { items.contains { if case .responseHeader = $0 { return true } else { return false } } }
    /// More than this many values per listener is a config error: a record keeps one bit per slot.
    public static let maxSlots = 64

    public init() {}

    mutating func slot(_ item: Item) -> Int {
        if let i = items.firstIndex(of: item) { return i }
        items.append(item)
        return items.count - 1
    }
}

/// A compiled `log_format`.
public struct AccessLogFormat: Sendable, Equatable {
    public let fields: [AccessLogField]
    /// Variable names the format uses that neither Tern nor MOSN defines (written as "-").
    public let unknownNames: [String]
    /// `fields` as the formatter walks them: plain values (no reference to retain per field) over
    /// one buffer of every literal text.
    let ops: [AccessLogOp]
    let text: [UInt8]

    init(fields: [AccessLogField], unknownNames: [String]) {
        self.fields = fields
        self.unknownNames = unknownNames
        var ops: [AccessLogOp] = [], text: [UInt8] = []
        for f in fields {
            switch f {
            case .text(let t):
                ops.append(AccessLogOp(kind: .text, start: Int32(text.count), count: Int32(t.count)))
                text += t
            case .captured(let slot): ops.append(AccessLogOp(kind: .captured, start: Int32(slot), count: 0))
            default: ops.append(AccessLogOp(kind: AccessLogOp.Kind(f), start: 0, count: 0))
            }
        }
        self.ops = ops
        self.text = text
    }

    public static func == (a: AccessLogFormat, b: AccessLogFormat) -> Bool { a.fields == b.fields }

    /// MOSN's default format (`types.DefaultAccessLogFormat`), used when `log_format` is empty.
    public static let mosnDefault = "%start_time% %trace_id%  %connection_id% %upstream_connection_id% %request_received_duration% %response_received_duration% %bytes_sent%" + " " +
        "%bytes_received% %protocol% %response_code% %duration% %response_flag% %response_code% %upstream_local_address%" + " " +
        "%downstream_local_address% %downstream_remote_address% %upstream_host%"

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case emptyVariable(at: Int), unclosedVariable, tooManyValues
        public var description: String {
            switch self {
            case .emptyVariable(let at): return "empty variable name (%%) at offset \(at)"
            case .unclosedVariable: return "a variable is not closed with %"
            case .tooManyValues: return "more than \(AccessLogCaptures.maxSlots) header and request values in one listener's formats"
            }
        }
    }

    /// Parses `format` as MOSN does: `%name%` is a variable, text between is literal, a `%` right
    /// after a backslash is literal (the backslash stays, as in MOSN). Values copied from the
    /// request get slots in `captures`, shared by the listener's formats.
    public static func parse(_ format: String, captures: inout AccessLogCaptures) throws(ParseError) -> AccessLogFormat {
        let bytes = Array((format.isEmpty ? mosnDefault : format).utf8)
        var fields: [AccessLogField] = []
        var unknown: [String] = []
        var inVariable = false
        var mark = -1   // position of the last % that opened or closed a variable
        for (pos, b) in bytes.enumerated() where b == UInt8(ascii: "%") {
            if pos > 0 && bytes[pos - 1] == UInt8(ascii: "\\") { continue }
            if inVariable {
                if pos == mark + 1 { throw .emptyVariable(at: pos) }
                let name = String(decoding: bytes[(mark + 1)..<pos], as: UTF8.self)
                let field = try variable(name, &captures)
                if field == .unknown { unknown.append(name) }
                fields.append(field)
            } else if pos > mark + 1 {
                fields.append(.text(Array(bytes[(mark + 1)..<pos])))
            }
            mark = pos
            inVariable.toggle()
        }
        if inVariable { throw .unclosedVariable }
        if mark < bytes.count - 1 { fields.append(.text(Array(bytes[(mark + 1)...]))) }
        return AccessLogFormat(fields: fields, unknownNames: unknown)
    }

    static func variable(_ name: String, _ captures: inout AccessLogCaptures) throws(ParseError) -> AccessLogField {
        func capture(_ item: AccessLogCaptures.Item) throws(ParseError) -> AccessLogField {
            let slot = captures.slot(item)
            guard slot < AccessLogCaptures.maxSlots else { throw .tooManyValues }
            return .captured(slot)
        }
        switch name {
        case "start_time": return .startTime
        case "trace_id": return try capture(.traceID)
        case "connection_id": return .connectionID
        case "upstream_connection_id": return .upstreamConnectionID
        case "request_received_duration": return .requestReceivedDuration
        case "response_received_duration": return .responseReceivedDuration
        case "request_finished_duration": return .requestFinishedDuration
        case "process_time_duration": return .processTimeDuration
        case "duration": return .duration
        case "bytes_sent": return .bytesSent
        case "bytes_received": return .bytesReceived
        case "protocol": return .protocolName
        case "response_code", "x-mosn-status": return .responseCode
        case "response_flag", "response_flags": return .responseFlag
        case "upstream_local_address": return .upstreamLocalAddress
        case "downstream_local_address": return .downstreamLocalAddress
        case "downstream_remote_address": return .downstreamRemoteAddress
        case "upstream_host": return .upstreamHost
        case "upstream_cluster": return .upstreamCluster
        case "upstream_transport_failure_reason": return .upstreamTransportFailureReason
        case "listener_name": return .listenerName
        case "request_method", "Http1_request_method", "x-mosn-method": return try capture(.method)
        case "request_path", "Http1_request_path", "x-mosn-path": return try capture(.path)
        case "request_uri", "Http1_request_uri": return try capture(.uri)
        case "request_arg", "Http1_request_arg", "x-mosn-querystring": return try capture(.query)
        case "x-mosn-host", "authority", "request_host": return try capture(.host)
        default:
            for prefix in ["request_header_", "Http1_request_header_"] where name.hasPrefix(prefix) && name.count > prefix.count {
                return try capture(.requestHeader(Array(name.dropFirst(prefix.count).lowercased().utf8)))
            }
            if name.hasPrefix("response_header_") && name.count > "response_header_".count {
                return try capture(.responseHeader(Array(name.dropFirst("response_header_".count).lowercased().utf8)))
            }
            return .unknown
        }
    }
}

/// One `access_logs` entry of a listener, compiled.
public struct AccessLogSpec: Sendable {
    /// Index of its file among the process's access-log files (`AccessLogWriter.paths`).
    public let file: Int
    public let format: AccessLogFormat
    public init(file: Int, format: AccessLogFormat) { self.file = file; self.format = format }
}

/// A listener's access logs: shared read-only by every worker (through `ProxySettings`).
/// Immutable after init; the formats are also laid out flat in memory it owns, so writing a line
/// touches no reference-counted value (hence @unchecked Sendable: nothing is written after init).
public final class AccessLogPlan: @unchecked Sendable {
    public let logs: [AccessLogSpec]
    public let captures: AccessLogCaptures
    /// Some format prints a connection id or address (each connection then looks them up once).
    public let printsConnections: Bool
    let compiled: UnsafeMutablePointer<CompiledAccessLog>
    let listenerName: LogText
    private let storage: UnsafeMutablePointer<UInt8>
    private let opStorage: UnsafeMutablePointer<AccessLogOp>

    public init(logs: [AccessLogSpec], captures: AccessLogCaptures, listenerName: String = "") {
        self.logs = logs
        self.captures = captures
        let connectionFields: [AccessLogField] = [.connectionID, .upstreamConnectionID, .upstreamLocalAddress, .downstreamLocalAddress, .downstreamRemoteAddress]
        printsConnections = logs.contains { $0.format.fields.contains { connectionFields.contains($0) } }
        let (storage, texts) = packLogTexts([Array(listenerName.utf8)] + logs.map(\.format.text))
        self.storage = storage
        self.listenerName = texts[0]
        let opCount = logs.reduce(0) { $0 + $1.format.ops.count }
        opStorage = .allocate(capacity: max(1, opCount))
        compiled = .allocate(capacity: max(1, logs.count))
        var at = 0
        for (i, spec) in logs.enumerated() {
            spec.format.ops.withUnsafeBufferPointer { if let b = $0.baseAddress { (opStorage + at).initialize(from: b, count: $0.count) } }
            (compiled + i).initialize(to: CompiledAccessLog(file: spec.file, ops: UnsafePointer(opStorage + at), opCount: spec.format.ops.count,
                                                            text: texts[i + 1].base))
            at += spec.format.ops.count
        }
    }

    deinit {
        storage.deallocate()
        opStorage.deallocate()
        compiled.deallocate()
    }
}

/// One log of a plan, flat: its file and its format's fields and text.
struct CompiledAccessLog {
    let file: Int
    let ops: UnsafePointer<AccessLogOp>
    let opCount: Int
    let text: UnsafePointer<UInt8>?
}

/// Bytes a line copies, held by an object the record keeps alive: the formatter reads them
/// without a reference count per field.
public struct LogText {
    let base: UnsafePointer<UInt8>?
    let count: Int
    static var none: LogText { LogText(base: nil, count: 0) }
}

/// Copies `parts` into one allocation (freed by the owner's deinit) and returns each part's text.
func packLogTexts(_ parts: [[UInt8]]) -> (UnsafeMutablePointer<UInt8>, [LogText]) {
    let storage = UnsafeMutablePointer<UInt8>.allocate(capacity: max(1, parts.reduce(0) { $0 + $1.count }))
    var at = 0, texts: [LogText] = []
    for p in parts {
        p.withUnsafeBufferPointer { if let b = $0.baseAddress { (storage + at).update(from: b, count: p.count) } }
        texts.append(LogText(base: UnsafePointer(storage + at), count: p.count))
        at += p.count
    }
    return (storage, texts)
}

/// What one request did, filled by its session; formatted into each of the listener's logs when
/// it ends. Reused: an HTTP/1 session keeps one, bolt takes one per call from its worker's output.
public final class AccessLogRecord {
    /// When the request's head was read (the loop's monotonic µs; the formatter turns it into wall time).
    public var startUS: Int64 = 0
    /// When the request was sent upstream, its response head arrived, and it ended (monotonic µs; 0: never).
    public var sentUS: Int64 = 0
    public var responseUS: Int64 = 0
    public var endUS: Int64 = 0
    /// Body bytes of the request and of the response (MOSN's bytes_received / bytes_sent).
    public var bytesReceived: Int64 = 0
    public var bytesSent: Int64 = 0
    /// The status the client got (HTTP status or bolt response status); -1: none was written.
    public var responseCode = -1
    /// Tern answered or ended the request itself (no route, no host, timeout, a filter...): MOSN's response_flag.
    public var flagged = false
    public var protocolName: StaticString = "-"
    /// Why the upstream connection failed, when that ended the request.
    public var failureReason: String?
    /// The connections' and the cluster's texts, kept alive by the owners held here.
    private var downstreamOwner: ConnectionLogIdentity?
    private var upstreamOwner: ConnectionLogIdentity?
    private var clusterOwner: ClusterLogTexts?
    private(set) var downstreamTexts = ConnectionLogTexts.none
    private(set) var upstreamTexts = ConnectionLogTexts.none
    private(set) var clusterText = LogText.none
    private(set) var hostText = LogText.none
    /// Whether the formats print connection facts (ids, addresses): only then are they looked up.
    private var wantsConnections = false
    /// Captured values, one after another, and each slot's (offset, length); length -1: absent.
    /// Sized by what the formats capture (MOSN's default: the trace id only), made on first use:
    /// an HTTP/1 connection keeps its record while it lives.
    private var captured: UnsafeMutablePointer<UInt8>?
    private var capturedCapacity = 0
    private var capturedUsed = 0
    private var slots: UnsafeMutablePointer<Int>?
    private var slotCapacity = 0
    /// Between `begin` and the line being written.
    public private(set) var isOpen = false

    public init() {}

    deinit {
        captured?.deallocate()
        slots?.deallocate()
    }

    /// A request's head was read: clocks start, `request`'s values named by the formats are copied.
    /// `traceHeader`: where the protocol carries SOFA's trace id (`httpTraceHeader`, `boltTraceHeader`).
    public func begin<R: StreamRequest>(_ request: R?, plan: AccessLogPlan, downstream: Connection, protocolName: StaticString,
                                        traceHeader: [UInt8], nowUS: Int64) {
        startUS = nowUS
        sentUS = 0; responseUS = 0; endUS = 0
        bytesReceived = 0; bytesSent = 0
        responseCode = -1; flagged = false; failureReason = nil
        self.protocolName = protocolName
        wantsConnections = plan.printsConnections
        if wantsConnections {
            let identity = downstream.logIdentity
            downstreamOwner = identity
            downstreamTexts = identity.texts
        }
        isOpen = true
        let items = plan.captures.items
        guard !items.isEmpty else { return }
        if slotCapacity < items.count {
            slots?.deallocate()
            slots = .allocate(capacity: 2 * items.count)
            slotCapacity = items.count
        }
        let slots = slots!
        capturedUsed = 0
        for slot in items.indices { slots[2 * slot + 1] = -1 }
        guard let request else { return }
        for (slot, item) in items.enumerated() {
            switch item {
            case .method: request.withMethod { store(slot, $0, $1, emptyIsAbsent: true) }
            case .path: request.withPath { store(slot, $0, $1, emptyIsAbsent: true) }
            case .host: request.withHost { store(slot, $0, $1, emptyIsAbsent: true) }
            case .query: request.withQuery { store(slot, $0, $1, emptyIsAbsent: true) }
            case .uri:
                request.withPath { store(slot, $0, $1, emptyIsAbsent: true) }
                request.withQuery { p, n in
                    guard n > 0, slots[2 * slot + 1] >= 0 else { return }
                    // The path was the last value stored: the query goes right after it.
                    var question = UInt8(ascii: "?")
                    append(&question, 1)
                    append(p, n)
                    slots[2 * slot + 1] += 1 + n
                }
            case .traceID:
                _ = request.withHeader(lowercasedName: traceHeader) { store(slot, $0, $1, emptyIsAbsent: false) }
            case .requestHeader(let name):
                _ = request.withHeader(lowercasedName: name) { store(slot, $0, $1, emptyIsAbsent: false) }
            case .responseHeader:
                break
            }
        }
    }

    public static let httpTraceHeader = Array("sofa-traceid".utf8)
    public static let boltTraceHeader = Array("rpc_trace_context.sofatraceid".utf8)

    /// The response head arrived: its headers named by the formats are copied (`header(name)` gives
    /// a value in place, nil when absent).
    public func captureResponse(captures: AccessLogCaptures, _ header: ([UInt8], (UnsafePointer<UInt8>, Int) -> Void) -> Bool) {
        guard captures.capturesResponse else { return }
        for (slot, item) in captures.items.enumerated() {
            guard case .responseHeader(let name) = item else { continue }
            _ = header(name) { store(slot, $0, $1, emptyIsAbsent: false) }
        }
    }

    private func store(_ slot: Int, _ p: UnsafePointer<UInt8>, _ n: Int, emptyIsAbsent: Bool) {
        guard let slots, slot < slotCapacity, !(n == 0 && emptyIsAbsent) else { return }
        slots[2 * slot] = capturedUsed
        slots[2 * slot + 1] = n
        append(p, n)
    }

    private func append(_ p: UnsafePointer<UInt8>, _ n: Int) {
        if capturedUsed + n > capturedCapacity || captured == nil {   // an empty value needs a base too
            var grown = max(64, capturedCapacity * 2)
            while grown < capturedUsed + n { grown *= 2 }
            let next = UnsafeMutablePointer<UInt8>.allocate(capacity: grown)
            if let old = captured {
                next.update(from: old, count: capturedUsed)
                old.deallocate()
            }
            captured = next
            capturedCapacity = grown
        }
        (captured! + capturedUsed).update(from: p, count: n)
        capturedUsed += n
    }

    /// A captured value (nil: absent).
    func value(_ slot: Int) -> LogText? {
        guard let slots, slot < slotCapacity else { return nil }
        let n = slots[2 * slot + 1]
        guard n >= 0, let captured else { return nil }
        return LogText(base: UnsafePointer(captured + slots[2 * slot]), count: n)
    }

    /// The upstream exchange began: where it went (`upstream` may follow with `sent(on:)`).
    public func sent(cluster: ClusterRuntime, host: Int, upstream: Connection?, nowUS: Int64) {
        let texts = cluster.logTexts
        clusterOwner = texts
        clusterText = texts.cluster
        hostText = host >= 0 && host < texts.hosts.count ? texts.hosts[host] : .none
        if let upstream { sent(on: upstream) }
        sentUS = nowUS
    }

    /// The upstream connection the request went out on.
    public func sent(on upstream: Connection) {
        guard wantsConnections else { return }
        let identity = upstream.logIdentity
        upstreamOwner = identity
        upstreamTexts = identity.texts
    }

    /// Drops the references the line no longer needs (the record outlives its request).
    func close() {
        isOpen = false
        if downstreamOwner != nil { downstreamOwner = nil; downstreamTexts = .none }
        if upstreamOwner != nil { upstreamOwner = nil; upstreamTexts = .none }
        if clusterOwner != nil { clusterOwner = nil; clusterText = .none; hostText = .none }
    }
}

/// A connection's access-log texts: its id, local and remote address.
public struct ConnectionLogTexts {
    let id: LogText
    let local: LogText
    let remote: LogText
    static var none: ConnectionLogTexts { ConnectionLogTexts(id: .none, local: .none, remote: .none) }
}

/// A connection's facts for access logs, made on first use (only access logs ask): a process-wide
/// id (MOSN's connection_id) and both addresses as text.
public final class ConnectionLogIdentity {
    public let id: UInt64
    let texts: ConnectionLogTexts
    private let storage: UnsafeMutablePointer<UInt8>
    init(fd: Int32) {
        id = ConnectionLogIdentity.nextID.add(1, ordering: .relaxed).newValue
        let local = Array((SocketAddress.local(of: fd)?.description ?? "-").utf8)
        let remote = Array((SocketAddress.peer(of: fd)?.description ?? "-").utf8)
        let (storage, t) = packLogTexts([Array(String(id).utf8), local, remote])
        self.storage = storage
        texts = ConnectionLogTexts(id: t[0], local: t[1], remote: t[2])
    }
    deinit { storage.deallocate() }
    static let nextID = Atomic<UInt64>(0)
}

/// A cluster's name and its hosts' names (`hostname`, else the address) as access logs print them.
public final class ClusterLogTexts {
    let cluster: LogText
    let hosts: [LogText]
    private let storage: UnsafeMutablePointer<UInt8>
    init(_ config: ClusterConfig) {
        let names = config.hosts.map { Array(($0.hostname.isEmpty ? $0.address.description : $0.hostname).utf8) }
        let (storage, t) = packLogTexts([Array(config.name.utf8)] + names)
        self.storage = storage
        cluster = t[0]
        hosts = Array(t.dropFirst())
    }
    deinit { storage.deallocate() }
}
