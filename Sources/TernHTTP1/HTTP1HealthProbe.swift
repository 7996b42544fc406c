import TernCore

/// MOSN's HTTP health check (`health_check.protocol: Http1` with `check_config.http_check_config`):
/// `method` `path` with `Host: domain` (default the host's `hostname`, else its address) and
/// `Connection: close`; healthy when the status is in one of `codes` (inclusive ranges; MOSN's
/// default: 200 only). Only the status line is read.
public struct HTTP1HealthProbe: HealthProbe {
    public let method: String
    public let path: String
    public let domain: String?
    public let codes: [ClosedRange<Int>]

    public init(method: String, path: String, domain: String?, codes: [ClosedRange<Int>]) {
        self.method = method
        self.path = path
        self.domain = domain
        self.codes = codes.isEmpty ? [200...200] : codes
    }

    public var name: String { "http" }

    public func request(for host: HostConfig) -> [UInt8]? {
        let hostHeader = domain ?? (!host.hostname.isEmpty ? host.hostname : host.address.isUnix ? "localhost" : host.address.description)
        return Array("\(method) \(path.isEmpty ? "/" : path) HTTP/1.1\r\nHost: \(hostHeader)\r\nUser-Agent: tern-healthcheck\r\nConnection: close\r\n\r\n".utf8)
    }

    /// `HTTP/1.x NNN`: the first 12 bytes decide.
    public func judge(_ p: UnsafePointer<UInt8>, _ count: Int) -> ProbeVerdict {
        let prefix: [UInt8] = Array("HTTP/1.".utf8)
        for i in 0..<min(count, prefix.count) where p[i] != prefix[i] { return .unhealthy("not an HTTP/1 answer") }
        guard count >= 12 else { return .needMore }
        var status = 0
        for i in 9..<12 {
            guard p[i] >= 48 && p[i] <= 57 else { return .unhealthy("malformed status line") }
            status = status * 10 + Int(p[i] - 48)
        }
        return codes.contains { $0.contains(status) } ? .healthy : .unhealthy("status \(status)")
    }
}
