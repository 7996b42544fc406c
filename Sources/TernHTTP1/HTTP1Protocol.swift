import TernCore

/// `Http1` in MOSN configs: the HTTP/1.1 server codec plus the proxy session that drives an
/// HTTP/1.1 client codec toward the upstream.
public struct HTTP1Protocol: StreamProtocol {
    public init() {}
    public var name: String { "Http1" }

    /// A request line starts with an upper-case method token and a space.
    public func sniff(_ p: UnsafePointer<UInt8>, _ n: Int) -> SniffResult {
        var i = 0
        while i < n && i < 2 && (p[i] == 13 || p[i] == 10) { i += 1 }
        let start = i
        while i < n && i - start < 16 {
            let b = p[i]
            if b == 32 { return i - start >= 3 ? .match : .noMatch }
            if !(b >= 65 && b <= 90) && b != UInt8(ascii: "-") && b != UInt8(ascii: "_") { return .noMatch }
            i += 1
        }
        return i - start >= 16 ? .noMatch : .needMoreBytes
    }

    public func startSession(connection: Connection, forwarder: Forwarder) {
        let worker = forwarder.worker
        let session = HTTP1Session(connection: connection, forwarder: forwarder)
        connection.delegate = session
        worker.add(session, fd: connection.fd)
    }
}

/// Status lines for the codes Tern writes itself or passes on.
public enum StatusText {
    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 301: return "Moved Permanently"
        case 302: return "Found"
        case 303: return "See Other"
        case 304: return "Not Modified"
        case 307: return "Temporary Redirect"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 417: return "Expectation Failed"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return "Unknown"
        }
    }
}
