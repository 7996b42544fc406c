import TernCore

/// A request for router tests: path, host and headers as plain strings.
public struct FakeRequest: StreamRequest {
    public var path: String
    public var query: String = ""
    public var host: String
    public var headers: [(String, String)]
    public var contentLength: Int64?
    public init(path: String, host: String = "", headers: [(String, String)] = [], contentLength: Int64? = 0) {
        self.path = path; self.host = host; self.headers = headers; self.contentLength = contentLength
    }

    public func withMethod<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        let b = Array("GET".utf8)
        return b.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) }
    }

    public func withPath<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        let b = Array(path.utf8) + [0]
        return b.withUnsafeBufferPointer { body($0.baseAddress!, $0.count - 1) }
    }
    public func withQuery<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        let b = Array(query.utf8) + [0]
        return b.withUnsafeBufferPointer { body($0.baseAddress!, $0.count - 1) }
    }
    public func withHost<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        let b = Array(host.utf8) + [0]
        return b.withUnsafeBufferPointer { body($0.baseAddress!, $0.count - 1) }
    }
    public func withHeader<R>(lowercasedName: [UInt8], _ body: (UnsafePointer<UInt8>, Int) -> R) -> R? {
        guard let v = headers.first(where: { Bytes.lowercased($0.0) == lowercasedName })?.1 else { return nil }
        let b = Array(v.utf8) + [0]
        return b.withUnsafeBufferPointer { body($0.baseAddress!, $0.count - 1) }
    }
}

