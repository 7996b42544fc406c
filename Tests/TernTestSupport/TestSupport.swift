import Foundation
import Glibc
import Synchronization

/// Every child a test starts, killed by PID when the test process ends, however it ends: at exit,
/// or from a handler for the signals that end a process (a trap in a test, Ctrl-C, a CI timeout's
/// SIGTERM). Only SIGKILL of the test process itself leaves them running. The PIDs sit in a fixed
/// table of plain integers because a signal handler may only read memory and call kill(2).
private let pidSlotCount = 512
nonisolated(unsafe) private let pidSlots: UnsafeMutablePointer<Int32> = {
    let p = UnsafeMutablePointer<Int32>.allocate(capacity: pidSlotCount)
    p.initialize(repeating: 0, count: pidSlotCount)
    return p
}()
private let slotLock = Mutex<Void>(())
private let fatalSignals: [Int32] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE]
/// The handlers that were there before (the Swift runtime's backtracer), restored before re-raising.
nonisolated(unsafe) private let previousActions: UnsafeMutablePointer<sigaction> = {
    let p = UnsafeMutablePointer<sigaction>.allocate(capacity: 65)
    p.initialize(repeating: sigaction(), count: 65)
    return p
}()

private func killLiveChildren() {
    for i in 0..<pidSlotCount where pidSlots[i] > 0 { kill(pidSlots[i], SIGKILL) }
}

private let reaperInstalled: Bool = {
    atexit { killLiveChildren() }
    for sig in fatalSignals {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { sig in
            killLiveChildren()
            sigaction(sig, previousActions + Int(sig), nil)
            raise(sig)
        }
        sigemptyset(&action.sa_mask)
        sigaction(sig, &action, previousActions + Int(sig))
    }
    return true
}()

private func track(_ pid: Int32) {
    slotLock.withLock { _ in
        for i in 0..<pidSlotCount where pidSlots[i] == 0 { pidSlots[i] = pid; return }
        fatalError("more than \(pidSlotCount) live test children")
    }
}

private func untrack(_ pid: Int32) {
    slotLock.withLock { _ in for i in 0..<pidSlotCount where pidSlots[i] == pid { pidSlots[i] = 0 } }
}

/// Helpers shared by the test targets: paths, free ports, child processes, raw sockets.
public enum TestPaths {
    /// The package root, found from this file's location.
    public static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    public static var ternBinary: String {
        if let b = ProcessInfo.processInfo.environment["TERN_BIN"] { return b }
        return root + "/.build/debug/tern"
    }
    public static var peers: String { root + "/Tests/IntegrationTests/peers" }
}

public struct TestError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// A TCP port the OS just handed out (bound to port 0, then released).
public func freePort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return UInt16(bigEndian: addr.sin_port)
}

/// Polls `condition` every 20 ms until it holds or `timeout` seconds pass.
public func waitUntil(timeout: Double, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

public func canConnect(_ port: UInt16, host: String = "127.0.0.1") -> Bool {
    guard let c = try? RawClient(port: port, timeout: 1, host: host) else { return false }
    c.close()
    return true
}

/// A child process with its output captured to a file. Spawned with posix_spawn and reaped with
/// waitpid directly: Foundation's Process could leave a child unreaped and hang waitUntilExit.
extension ChildProcess {
    /// The port a test peer prints on its first line once it listens (waited for up to 10 s).
    public func portOnFirstLine(_ what: String) throws -> UInt16 {
        var found: UInt16 = 0
        _ = waitUntil(timeout: 10) {
            if let first = self.output.split(separator: "\n").first, let p = UInt16(first) { found = p; return true }
            return false
        }
        guard found != 0 else { throw TestError("\(what) did not start: \(output)") }
        return found
    }
}

public final class ChildProcess: @unchecked Sendable {
    public let pid: Int32
    public let outputPath: String
    private let state = Mutex<(exited: Bool, status: Int32)>((false, 0))

    /// `standardInput` is a file the child reads as its stdin (/dev/null when nil); `environment`
    /// is added to (or overrides) the test process's own.
    public init(_ executable: String, _ arguments: [String], name: String, stderrToNull: Bool = false,
                standardInput: String? = nil, environment: [String: String] = [:]) throws {
        outputPath = NSTemporaryDirectory() + "tern-test-\(name)-\(UUID().uuidString).log"
        let out = open(outputPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard out >= 0 else { throw TestError("cannot create \(outputPath)") }
        defer { close(out) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, standardInput ?? "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out, 1)
        if stderrToNull { posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0) }
        else { posix_spawn_file_actions_adddup2(&actions, out, 2) }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv + envp { free(p) } }
        _ = reaperInstalled
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, nil, argv, envp)
        guard rc == 0 else { throw TestError("posix_spawn \(executable): \(String(cString: strerror(rc)))") }
        pid = child
        track(child)
    }

    public var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    public func signal(_ sig: Int32) { kill(pid, sig) }

    /// Whether the child still runs (reaps it, without blocking, once it has exited).
    public var isRunning: Bool {
        state.withLock { s in
            if s.exited { return false }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                s.exited = true
                untrack(pid)   // reaped: its PID may be reused by an unrelated process from now on
                // WIFEXITED / WEXITSTATUS, or 128 + signal number when killed.
                s.status = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
                return false
            }
            return true
        }
    }

    /// Waits for exit up to `timeout` seconds; the exit status, or nil when still running.
    public func waitForExit(timeout: Double) -> Int32? {
        guard waitUntil(timeout: timeout, { !isRunning }) else { return nil }
        return state.withLock { $0.status }
    }

    public func stop() {
        if isRunning {
            kill(pid, SIGKILL)
            _ = waitUntil(timeout: 10) { !isRunning }
        }
        untrack(pid)
    }

    /// Pipe ends the child holds open (Linux /proc): tcp_proxy's splice path holds a pipe per
    /// direction, so four per pair.
    public var openPipeEnds: Int {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return entries.filter { ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) ?? "").hasPrefix("pipe:") }.count
    }

    /// Resident memory of the child in KiB (Linux /proc).
    public var rssKB: Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
        }
        return -1
    }

    /// Open file descriptors of the child (Linux /proc).
    public var openFDs: Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    deinit { stop() }
}

/// The Python upstream in Tests/IntegrationTests/peers/upstream.py.
public final class PythonUpstream: @unchecked Sendable {
    public let child: ChildProcess
    public let port: UInt16
    public let logPath: String

    /// `bind`: another loopback address (127.0.0.2, ...) for tests that tell hosts apart by IP.
    public init(port requested: UInt16 = 0, bind: String = "127.0.0.1") throws {
        logPath = NSTemporaryDirectory() + "tern-upstream-\(UUID().uuidString).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let child = try ChildProcess("/usr/bin/env", ["python3", "-u", TestPaths.peers + "/upstream.py", "--port", String(requested), "--bind", bind, "--log", logPath], name: "upstream")
        self.child = child
        let found = try child.portOnFirstLine("upstream")
        port = found
        guard waitUntil(timeout: 5, { canConnect(found, host: bind) }) else { throw TestError("upstream not accepting") }
    }

    /// Request lines the upstream received ("METHOD target").
    public var requestLog: [String] {
        ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// How many connections the upstream has accepted so far (its /stats answer; the probe itself
    /// is one of them).
    public func connectionCount() throws -> Int {
        let text = try run("/usr/bin/curl", ["-s", "--max-time", "5", "http://127.0.0.1:\(port)/stats"]).1
        return Int(text.split(separator: " ").first?.dropFirst("connections=".count) ?? "") ?? -1
    }

    public func stop() { child.stop() }
}

/// A `tern start` process on a config given as text.
public final class TernProcess: @unchecked Sendable {
    public let child: ChildProcess
    public let configPath: String

    public init(config: String, waitFor ports: [UInt16], extraArguments: [String] = [], environment: [String: String] = [:]) throws {
        configPath = NSTemporaryDirectory() + "tern-config-\(UUID().uuidString).json"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let child = try ChildProcess(TestPaths.ternBinary, ["start", "-c", configPath] + extraArguments, name: "tern", environment: environment)
        self.child = child
        for p in ports {
            guard waitUntil(timeout: 10, { canConnect(p) || !child.isRunning }), child.isRunning else {
                throw TestError("tern did not listen on \(p): \(child.output)")
            }
        }
    }

    public func stop() { child.stop() }
}

/// A blocking TCP client for sending exact bytes (malformed requests, pipelining, split writes).
public final class RawClient {
    public let fd: Int32

    /// `receiveBuffer` (SO_RCVBUF, set before connecting) makes a client that reads slowly hold
    /// little in its kernel buffer, so the proxy has to hold or pause the rest.
    public init(port: UInt16, timeout: Double = 5, receiveBuffer: Int32? = nil, host: String = "127.0.0.1") throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withIPv4Address(host, port: port) { connect(fd, $0, $1) }
        if rc != 0 {
            // close() marks it closed: a throwing class init still runs deinit, and a second
            // close(2) could hit a descriptor another test thread has just opened (it once broke
            // a posix_spawn with EBADF).
            let e = errno
            close()
            throw TestError("connect to \(port) failed: errno \(e)")
        }
    }

    public func send(_ text: String) { send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            // MSG_NOSIGNAL: a peer that already closed (as Tern does after an error answer) must
            // not kill the test process with SIGPIPE.
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads until the peer closes or the timeout passes.
    public func readAll() -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }

    /// Reads until `count` complete HTTP responses (Content-Length or chunked framed) have arrived.
    public func readResponses(_ count: Int) -> [HTTPResponse] {
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let parsed = HTTPResponse.parseAll(data)
            if parsed.count >= count { return parsed }
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return parsed }
            data.append(contentsOf: buf[0..<n])
        }
    }

    /// Reads until the end of one response head (for HEAD responses, which have no body).
    public func readHead() -> String {
        var data: [UInt8] = []
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1 {
            data.append(byte)
            if data.count >= 4 && data.suffix(4) == [13, 10, 13, 10] { break }
        }
        return String(decoding: data, as: UTF8.self)
    }

    public func readString() -> String { String(decoding: readAll(), as: UTF8.self) }

    /// Shuts down the write side (the peer reads EOF) and keeps reading open.
    public func halfClose() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads whatever arrives until the peer closes or `timeout` seconds pass: the bytes, whether
    /// the peer closed (EOF or reset), and when.
    public func readUntilClosed(timeout: Double) -> (bytes: [UInt8], closed: Bool, elapsed: Double) {
        let start = Date()
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let left = timeout - Date().timeIntervalSince(start)
            if left <= 0 { return (out, false, Date().timeIntervalSince(start)) }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, Int32(left * 1000) + 1) <= 0 { continue }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n > 0 { out.append(contentsOf: buf[0..<n]); continue }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }
            return (out, true, Date().timeIntervalSince(start))
        }
    }

    private var closed = false
    public func close() { if !closed { closed = true; Glibc.close(fd) } }
    deinit { close() }
}

/// A minimal response parser for tests (status, headers, body; Content-Length or chunked).
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
    public var trailers: [(String, String)] = []
    public var bodyText: String { String(decoding: body, as: UTF8.self) }
    public func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    public func headers(_ name: String) -> [String] { headers.filter { $0.0.lowercased() == name.lowercased() }.map { $0.1 } }

    public static func parseAll(_ data: [UInt8]) -> [HTTPResponse] {
        var out: [HTTPResponse] = []
        var rest = data[...]
        while let (r, used) = parseOne(rest) {
            if r.status >= 200 { out.append(r) }
            rest = rest.dropFirst(used)
        }
        return out
    }

    static func findCRLF(_ d: ArraySlice<UInt8>, from: Int) -> Int? {
        var i = from
        while i + 1 < d.endIndex { if d[i] == 13 && d[i + 1] == 10 { return i }; i += 1 }
        return nil
    }

    static func parseOne(_ d: ArraySlice<UInt8>) -> (HTTPResponse, Int)? {
        let start = d.startIndex
        var headEnd: Int?
        var i = start
        while i + 3 < d.endIndex { if d[i] == 13 && d[i + 1] == 10 && d[i + 2] == 13 && d[i + 3] == 10 { headEnd = i; break }; i += 1 }
        guard let he = headEnd else { return nil }
        let head = String(decoding: d[start..<he], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        var headers: [(String, String)] = []
        for l in lines {
            guard let c = l.firstIndex(of: ":") else { continue }
            headers.append((String(l[..<c]), l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)))
        }
        var r = HTTPResponse(status: status, headers: headers, body: [])
        var p = he + 4
        if status < 200 || status == 204 || status == 304 { return (r, p - start) }
        if let te = r.header("transfer-encoding"), te.lowercased().contains("chunked") {
            while true {
                guard let e = findCRLF(d, from: p) else { return nil }
                let sizeText = String(decoding: d[p..<e], as: UTF8.self).split(separator: ";")[0]
                guard let size = Int(sizeText, radix: 16) else { return nil }
                p = e + 2
                if size == 0 {
                    while true {
                        guard let le = findCRLF(d, from: p) else { return nil }
                        if le == p { p += 2; break }
                        let line = String(decoding: d[p..<le], as: UTF8.self)
                        if let c = line.firstIndex(of: ":") { r.trailers.append((String(line[..<c]), line[line.index(after: c)...].trimmingCharacters(in: .whitespaces))) }
                        p = le + 2
                    }
                    return (r, p - start)
                }
                guard p + size + 2 <= d.endIndex else { return nil }
                r.body.append(contentsOf: d[p..<(p + size)])
                p += size + 2
            }
        }
        if let cl = r.header("content-length").flatMap({ Int($0) }) {
            guard p + cl <= d.endIndex else { return nil }
            r.body = Array(d[p..<(p + cl)])
            return (r, p + cl - start)
        }
        return nil
    }
}

/// Runs a command and returns (exit status, stdout); killed after `timeout` seconds. `standardInput`
/// is a file fed to its stdin; `includeStderr` interleaves stderr with stdout (for diagnostics).
@discardableResult
public func run(_ executable: String, _ arguments: [String], timeout: Double = 30, standardInput: String? = nil,
                includeStderr: Bool = false) throws -> (Int32, String) {
    let child = try ChildProcess(executable, arguments, name: "run", stderrToNull: !includeStderr, standardInput: standardInput)
    defer { child.stop(); try? FileManager.default.removeItem(atPath: child.outputPath) }
    let status = child.waitForExit(timeout: timeout) ?? -1
    return (status, child.output)
}

/// A temporary file of `size` pattern bytes and its SHA-256 (hex, from sha256sum), for transfers
/// that must arrive intact. The caller removes the file.
public func temporaryPatternFile(size: Int, multiplier: Int = 31) throws -> (path: String, sha256: String) {
    let path = NSTemporaryDirectory() + "tern-upload-\(UUID().uuidString)"
    var bytes = [UInt8](repeating: 0, count: size)
    for i in 0..<size { bytes[i] = UInt8(truncatingIfNeeded: i &* multiplier &+ i >> 7) }
    _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return (path, String(try run("/usr/bin/sha256sum", [path]).1.split(separator: " ")[0]))
}

/// A simple MOSN config: one HTTP listener routing everything to one cluster.
public func proxyConfig(listen: UInt16, upstream: UInt16, protocolName: String = "Http1", routeTimeout: String? = nil,
                        extraProxyConfig: String = "", logLevel: String = "INFO", logPath: String = "stderr",
                        idleTimeout: String? = nil) -> String {
    let timeout = routeTimeout.map { ", \"timeout\": \"\($0)\"" } ?? ""
    let idle = idleTimeout.map { " \"connection_idle_timeout\": \"\($0)\"," } ?? ""
    return """
    { "servers": [{ "default_log_path": "\(logPath)", "default_log_level": "\(logLevel)", "graceful_timeout": "10s",
        "routers": [{ "router_config_name": "r", "virtual_hosts": [{ "name": "h", "domains": ["*"],
           "routers": [{ "match": {"prefix": "/"}, "route": {"cluster_name": "up"\(timeout)} }] }] }],
        "listeners": [{ "name": "l", "address": "127.0.0.1:\(listen)", "bind_port": true,\(idle)
           "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "\(protocolName)",
              "upstream_protocol": "Http1", "router_config_name": "r"\(extraProxyConfig) } }] }] }] }],
      "cluster_manager": { "clusters": [{ "name": "up", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN",
         "connect_timeout": "2s", "hosts": [{ "address": "127.0.0.1:\(upstream)" }] }] } }
    """
}

/// Bolt v1 frames for tests, built field by field.
public enum BoltTestFrame {
    public static let sofaRequestClass = "com.alipay.sofa.rpc.core.request.SofaRequest"

    static func be16(_ v: Int) -> [UInt8] { [UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }
    static func be32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

    public static func request(id: UInt32, service: String, method: String, body: [UInt8], timeoutMS: Int = 5000, oneway: Bool = false) -> [UInt8] {
        let headers = [("service", service), ("sofa_head_method_name", method), ("sofa_head_target_service", service)]
            .flatMap { be32($0.0.utf8.count) + Array($0.0.utf8) + be32($0.1.utf8.count) + Array($0.1.utf8) }
        var b: [UInt8] = [1, oneway ? 2 : 1] + be16(1) + [1] + be32(Int(id)) + [1] + be32(timeoutMS)
        b += be16(sofaRequestClass.utf8.count) + be16(headers.count) + be32(body.count)
        return b + Array(sofaRequestClass.utf8) + headers + body
    }

    /// A bolt v2 request (protocol 2, version 1), with a CRC32 of the frame when `crc` is set.
    public static func requestV2(id: UInt32, service: String, body: [UInt8], crc: Bool) -> [UInt8] {
        let headers = [("service", service), ("sofa_head_method_name", "echo")]
            .flatMap { be32($0.0.utf8.count) + Array($0.0.utf8) + be32($0.1.utf8.count) + Array($0.1.utf8) }
        var b: [UInt8] = [2, 1, 1] + be16(1) + [1] + be32(Int(id)) + [1, crc ? 1 : 0] + be32(3000)
        b += be16(sofaRequestClass.utf8.count) + be16(headers.count) + be32(body.count)
        b += Array(sofaRequestClass.utf8) + headers + body
        if crc { b += be32(Int(crc32(b))) }
        return b
    }

    /// CRC-32 as java.util.zip and Python's zlib compute it (written here, apart from Tern's own).
    public static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return ~c
    }

    /// Reads `count` v2 responses: proto ver1 type cmd(2) ver2 id(4) codec switch status(2)
    /// classLen(2) headerLen(2) contentLen(4) [crc(4) when switch bit 0].
    public static func readV2Responses(_ client: RawClient, _ count: Int) -> [(id: UInt32, status: Int, content: [UInt8], crcOK: Bool?)] {
        readFrames(client, count, fixedLength: 22) { d in
            let hasCRC = d[11] & 1 != 0
            let length = 22 + u16(d, 14) + u16(d, 16) + u32(d, 18) + (hasCRC ? 4 : 0)
            guard d.count >= length else { return nil }
            let contentStart = 22 + u16(d, 14) + u16(d, 16), contentEnd = length - (hasCRC ? 4 : 0)
            let crcOK: Bool? = hasCRC ? (crc32(Array(d[0..<contentEnd])) == UInt32(u32(d, contentEnd))) : nil
            return (length, (UInt32(u32(d, 6)), u16(d, 12), Array(d[contentStart..<contentEnd]), crcOK))
        }
    }

    static func u16(_ d: [UInt8], _ i: Int) -> Int { Int(d[i]) << 8 | Int(d[i + 1]) }
    static func u32(_ d: [UInt8], _ i: Int) -> Int { Int(d[i]) << 24 | Int(d[i + 1]) << 16 | Int(d[i + 2]) << 8 | Int(d[i + 3]) }

    /// Reads frames until `count` are decoded (fewer if the socket closes or times out);
    /// `decode` returns a whole frame's length and value, or nil when more bytes are needed.
    static func readFrames<T>(_ client: RawClient, _ count: Int, fixedLength: Int, _ decode: ([UInt8]) -> (Int, T)?) -> [T] {
        var data: [UInt8] = []
        var out: [T] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < count {
            while data.count >= fixedLength, let (length, value) = decode(data) {
                out.append(value)
                data.removeFirst(length)
            }
            if out.count >= count { break }
            let n = buf.withUnsafeMutableBytes { read(client.fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
        }
        return out
    }

    public static func heartbeat(id: UInt32) -> [UInt8] {
        [1, 1] + be16(0) + [1] + be32(Int(id)) + [1] + be32(1000) + be16(0) + be16(0) + be32(0)
    }

    public struct Response: Sendable {
        public let command: Int
        public let id: UInt32
        public let status: Int
        public let content: [UInt8]
    }

    /// Reads `count` v1 responses from a blocking socket (fewer if it closes or times out).
    /// Layout: proto type cmd(2) ver id(4) codec status(2) classLen(2) headerLen(2) contentLen(4).
    public static func readResponses(_ client: RawClient, _ count: Int) -> [Response] {
        readFrames(client, count, fixedLength: 20) { d in
            let length = 20 + u16(d, 12) + u16(d, 14) + u32(d, 16)
            guard d.count >= length else { return nil }
            let contentStart = 20 + u16(d, 12) + u16(d, 14)
            return (length, Response(command: u16(d, 2), id: UInt32(u32(d, 5)), status: u16(d, 10), content: Array(d[contentStart..<length])))
        }
    }
}

/// A free port not among `taken` (the OS may hand the same free port out twice in a row).
public func distinctFreePort(avoiding taken: [UInt16]) -> UInt16 {
    var port = freePort()
    while taken.contains(port) { port = freePort() }
    return port
}
