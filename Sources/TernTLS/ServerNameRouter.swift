import TernCore

/// Envoy's `filter_chain_match.server_names` over a listener's filter chains: exact names first,
/// then `*.suffix` wildcards (any number of labels before the suffix; the longest suffix wins, as
/// in Envoy), then the chain without server names. Names compare ASCII case-insensitively.
public struct ServerNameTable: Sendable {
    struct Entry: Sendable {
        /// Lowercase; for a wildcard the suffix with its dot (".example.com").
        let name: [UInt8]
        let chain: Int
    }
    let exact: [Entry]
    /// Longest suffix first, so the first match is the most specific.
    let wildcards: [Entry]
    public let defaultChain: Int?

    /// `names[i]`: the server names of chain i (a `*.` prefix makes a wildcard). The caller has
    /// checked them (`problem(with:)`) and that no name is listed twice.
    public init(names: [[String]], defaultChain: Int?) {
        var exact: [Entry] = []
        var wildcards: [Entry] = []
        for (chain, list) in names.enumerated() {
            for name in list {
                let lowered = Array(name.lowercased().utf8)
                if lowered.starts(with: Array("*.".utf8)) { wildcards.append(Entry(name: Array(lowered.dropFirst()), chain: chain)) }
                else { exact.append(Entry(name: lowered, chain: chain)) }
            }
        }
        self.exact = exact
        self.wildcards = wildcards.sorted { $0.name.count > $1.name.count }
        self.defaultChain = defaultChain
    }

    /// Why `name` cannot be a server name to match, or nil.
    public static func problem(with name: String) -> String? {
        if name.isEmpty { return "an empty server name" }
        let body = name.hasPrefix("*.") ? String(name.dropFirst(2)) : name
        if body.isEmpty || body.contains("*") {
            return "\"\(name)\": a server name is exact, or `*.` followed by a suffix (Envoy's forms)"
        }
        if body.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7F }) { return "\"\(name)\": not an ASCII host name" }
        return nil
    }

    /// The chain for the client's server name (nil: no SNI), else the default chain, else nil.
    public func chain(forServerName p: UnsafePointer<UInt8>?, count: Int) -> Int? {
        guard let p, count > 0 else { return defaultChain }
        for e in exact where e.name.count == count && matches(e.name, p + 0, count) { return e.chain }
        for e in wildcards where count > e.name.count && matches(e.name, p + (count - e.name.count), e.name.count) { return e.chain }
        return defaultChain
    }

    private func matches(_ lowered: [UInt8], _ p: UnsafePointer<UInt8>, _ count: Int) -> Bool {
        for k in 0..<count {
            let b = p[k]
            if lowered[k] != (b >= 0x41 && b <= 0x5A ? b | 0x20 : b) { return false }
        }
        return true
    }
}

/// SNI routing without terminating TLS (Istio's east-west passthrough): each connection waits,
/// unread, for its ClientHello (`PeekWait`); the server name picks a filter chain, which gets the
/// connection with every byte still in the socket, normally to forward it encrypted with
/// `tcp_proxy`. A first byte that is not a TLS handshake goes to the default chain; a
/// ClientHello that names no chain and no default, a malformed one, or one not all there within
/// the wait or the peek limit (one full record, 16 KiB + 5) closes the connection.
public final class ServerNameRouter: AcceptHandler, PeekClassifier {
    let table: ServerNameTable
    let chains: [AcceptHandler]
    public let worker: Worker
    public let listenerName: String
    public let peekWaitMS: Int64
    public let peekScratch: UnsafeMutableRawBufferPointer
    public var peekLimit: Int { tlsRecordHeaderBytes + maxTLSRecordPayload }
    public var timeoutReason: String { "no complete TLS ClientHello within \(peekWaitMS) ms" }

    public init(table: ServerNameTable, chains: [AcceptHandler], worker: Worker, waitMS: Int64, listenerName: String) {
        self.table = table
        self.chains = chains
        self.worker = worker
        self.peekWaitMS = waitMS
        self.listenerName = listenerName
        peekScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: tlsRecordHeaderBytes + maxTLSRecordPayload, alignment: 1)
    }

    deinit { peekScratch.deallocate() }

    public func accepted(_ connection: Connection, listener: Listener) { waitForBytes(connection, listener: listener) }

    public func classify(_ peeked: UnsafeRawBufferPointer, complete: Bool) -> PeekVerdict {
        let bytes = peeked.baseAddress!.assumingMemoryBound(to: UInt8.self)
        switch scanClientHello(bytes, count: peeked.count) {
        case .needMore:
            return complete ? .close("the client ended its stream (or passed \(peekLimit) bytes) before its ClientHello was complete") : .needMore
        case .malformed:
            return .close("malformed TLS ClientHello")
        case .notTLS:
            guard let d = table.defaultChain else { return .close("not TLS (first byte \(peeked[0])) and no default filter chain") }
            log("not TLS", d)
            return .handTo(chains[d])
        case .noServerName:
            guard let d = table.defaultChain else { return .close("ClientHello without a server name and no default filter chain") }
            log("no server name", d)
            return .handTo(chains[d])
        case .serverName(let range):
            guard let chain = table.chain(forServerName: bytes + range.lowerBound, count: range.count) else {
                return .close("server name \"\(name(bytes, range))\" matches no filter chain and there is no default one")
            }
            if worker.logger.enabled(.debug) { log("server name \"\(name(bytes, range))\"", chain) }
            return .handTo(chains[chain])
        }
    }

    private func name(_ bytes: UnsafePointer<UInt8>, _ range: Range<Int>) -> String {
        // Client bytes in a log line: printable ASCII only.
        String(decoding: UnsafeBufferPointer(start: bytes + range.lowerBound, count: min(range.count, 255)).map { $0 > 0x20 && $0 < 0x7F ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }

    private func log(_ what: @autoclosure () -> String, _ chain: Int) {
        if worker.logger.enabled(.debug) { worker.logger.debug("listener", "listener \(listenerName): \(what()) -> filter chain \(chain)") }
    }
}
