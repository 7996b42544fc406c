import CTernShim
import Glibc
import TernCore

/// Where and how a STRICT_DNS cluster's names are looked up: MOSN's `dns_resolvers` (servers,
/// search, port, ndots, timeout, attempts), else the resolver file (`dns_resolver_file`, default
/// /etc/resolv.conf) with `dns_resolver_port`. As in MOSN, Tern asks the DNS servers itself (UDP);
/// /etc/hosts is not read.
public struct DNSResolverSettings: Sendable, Equatable {
    public var servers: [SocketAddress] = []
    public var search: [String] = []
    public var ndots = 1
    /// How long one query waits for its answer.
    public var timeoutMS: Int64 = 2_000
    /// How many rounds over the servers one name gets.
    public var attempts = 2

    public init() {}

    /// resolv.conf's `nameserver`, `search`/`domain` and `options ndots: timeout: attempts:`; a file
    /// naming no server means the local one (127.0.0.1), as glibc does.
    public static func parseResolvConf(_ text: String, port: UInt16) -> DNSResolverSettings {
        var settings = DNSResolverSettings()
        for rawLine in text.split(separator: "\n") {
            let line = rawLine.split(whereSeparator: { $0 == "#" || $0 == ";" }).first ?? ""
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            guard let keyword = words.first else { continue }
            switch keyword {
            case "nameserver":
                if words.count > 1, let server = serverAddress(words[1], port: port) { settings.servers.append(server) }
            case "search":
                settings.search = Array(words.dropFirst())
            case "domain":
                if words.count > 1 { settings.search = [words[1]] }
            case "options":
                for option in words.dropFirst() {
                    let parts = option.split(separator: ":", maxSplits: 1)
                    guard parts.count == 2, let value = Int(parts[1]), value >= 0 else { continue }
                    switch parts[0] {
                    case "ndots": settings.ndots = min(value, 15)
                    case "timeout": settings.timeoutMS = Int64(min(max(value, 1), 30)) * 1000
                    case "attempts": settings.attempts = min(max(value, 1), 5)
                    default: break
                    }
                }
            default: continue
            }
        }
        if settings.servers.isEmpty, let local = serverAddress("127.0.0.1", port: port) { settings.servers = [local] }
        return settings
    }

    /// A DNS server written as a bare IP (v4 or v6), at `port`.
    static func serverAddress(_ text: String, port: UInt16) -> SocketAddress? {
        let bare = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        guard !bare.isEmpty, bare != "localhost" else { return nil }
        return SocketAddress.parse(bare.contains(":") ? "[\(bare)]:\(port)" : "\(bare):\(port)")
    }

    /// The names one lookup tries, in order (the rules of resolv.conf and of MOSN's resolver): a
    /// name with a trailing dot is tried alone; one with more than `ndots` dots is tried as it is
    /// first, then with each search domain; one with fewer is tried with the search domains first.
    public func candidates(for name: String) -> [String] {
        if name.hasSuffix(".") { return [name] }
        let dots = name.utf8.filter { $0 == UInt8(ascii: ".") }.count
        let searched = search.map { name + "." + ($0.hasSuffix(".") ? $0 : $0 + ".") }
        return dots >= ndots ? [name + "."] + searched : searched + [name + "."]
    }
}

/// One lookup's result.
public enum DNSLookup: Equatable, Sendable {
    case addresses([DNSAddressRecord])
    /// Every server failed or said the name has no address; the reason of the last one.
    case failed(String)
}

/// Blocking UDP lookups, made on the resolver's own thread (never a worker's): each query waits
/// at most `timeoutMS`, each name at most `attempts` rounds over the servers.
public enum DNSClient {
    public static func lookup(_ name: String, type: DNSRecordType, settings: DNSResolverSettings) -> DNSLookup {
        var reason = "no DNS server"
        for candidate in settings.candidates(for: name) {
            var nameAnswered = false
            for _ in 0..<max(1, settings.attempts) where !nameAnswered {
                for server in settings.servers {
                    switch exchange(candidate, type: type, server: server, timeoutMS: settings.timeoutMS) {
                    case .addresses(let records) where !records.isEmpty:
                        return .addresses(records)
                    case .addresses:
                        reason = "\(candidate) has no \(type == .a ? "A" : "AAAA") record (\(server))"
                        nameAnswered = true
                    case .noSuchName:
                        reason = "\(candidate) does not exist (NXDOMAIN from \(server))"
                        nameAnswered = true
                    case .failure(let why):
                        reason = "\(candidate) at \(server): \(why)"
                        continue
                    }
                    break
                }
            }
        }
        return .failed(reason)
    }

    /// One query to one server: its answer, or the failure (timeout, socket error, malformed).
    /// Replies with another id (late answers to an earlier query, spoofing attempts) are skipped
    /// until the deadline.
    static func exchange(_ name: String, type: DNSRecordType, server: SocketAddress, timeoutMS: Int64) -> DNSAnswer {
        let id = UInt16.random(in: 0...UInt16.max)
        guard let query = DNSMessage.query(id: id, name: name, type: type) else { return .failure("not a valid DNS name") }
        let fd = socket(Int32(server.family), Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        // Connected: the kernel drops datagrams from any other address.
        guard server.withSockAddr({ connect(fd, $0, $1) }) == 0 else { return .failure("connect: \(String(cString: strerror(errno)))") }
        guard query.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == query.count else {
            return .failure("send: \(String(cString: strerror(errno)))")
        }
        let deadline = tern_monotonic_ms() + timeoutMS
        var buffer = [UInt8](repeating: 0, count: DNSMessage.maxAnswerBytes)
        while true {
            let left = deadline - tern_monotonic_ms()
            guard left > 0 else { return .failure("no answer within \(timeoutMS) ms") }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, Int32(min(left, 60_000)))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return .failure("recv: \(String(cString: strerror(errno)))")   // ECONNREFUSED: nothing listens there
            }
            let answer = DNSMessage.parseAnswer(Array(buffer[0..<n]), id: id, name: name, type: type)
            if case .failure(let why) = answer, why.hasPrefix("answer to another query") { continue }
            return answer
        }
    }
}
