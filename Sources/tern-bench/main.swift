import CAllocCounter
import Glibc
import CTernShim
import TernCore
import TernHTTP1

// Micro-benchmarks of the hot-path pieces that need no sockets: nanoseconds and heap allocations
// per operation, allocations counted by an interposed malloc, not guessed.

struct Measurement { let name: String; let nsPerOp: Double; let allocsPerOp: Double }

@inline(never)
func measure(_ name: String, iterations: Int, _ body: () -> Void) -> Measurement {
    for _ in 0..<min(iterations / 10, 10_000) { body() }   // warm-up: scratch arrays reach size
    tern_alloc_counting(1)
    let before = tern_alloc_count()
    let start = tern_monotonic_ns()
    for _ in 0..<iterations { body() }
    let elapsed = tern_monotonic_ns() - start
    let allocs = tern_alloc_count() - before
    tern_alloc_counting(0)
    return Measurement(name: name, nsPerOp: Double(elapsed) / Double(iterations), allocsPerOp: Double(allocs) / Double(iterations))
}

let request = Array("""
GET /api/v1/users/12345/profile?fields=name,email HTTP/1.1\r
Host: api.example.com\r
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r
Accept: application/json, text/plain, */*\r
Accept-Language: en-US,en;q=0.9\r
Accept-Encoding: gzip, deflate, br\r
Connection: keep-alive\r
Cookie: session=abcdef0123456789; theme=dark\r
X-Request-Id: 5f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b\r
\r

""".utf8)
let response = Array("HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 22 Nov 2026 10:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 1234\r\nConnection: keep-alive\r\nCache-Control: no-cache\r\n\r\n".utf8)
let chunked = Array(("400\r\n" + String(repeating: "x", count: 1024) + "\r\n").utf8 + Array("0\r\n\r\n".utf8))

struct BenchRequest: RoutableRequest {
    let path: [UInt8], host: [UInt8], headers: [([UInt8], [UInt8])]
    func withPath<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R { path.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) } }
    func withHost<R>(_ body: (UnsafePointer<UInt8>, Int) -> R) -> R { host.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) } }
    func withHeader<R>(lowercasedName: [UInt8], _ body: (UnsafePointer<UInt8>, Int) -> R) -> R? {
        for (n, v) in headers where n == lowercasedName { return v.withUnsafeBufferPointer { body($0.baseAddress!, $0.count) } }
        return nil
    }
}

// A table of 20 virtual hosts with 10 routes each; the request matches the 8th route of the 15th host.
var hosts: [VirtualHost] = []
var domains: [[String]] = []
for h in 0..<20 {
    var routes: [Route] = []
    for r in 0..<10 {
        let action = RouteAction.cluster(ClusterRoute(clusters: [WeightedCluster(clusterIndex: 0, weight: 1)], timeoutMS: 0))
        let headers = r == 7 ? [HeaderMatcher(name: "x-env", value: "prod", regex: nil, caseSensitive: true)] : []
        routes.append(Route(path: .prefix(Array("/api/v\(r)/".utf8)), headers: headers, action: action))
    }
    hosts.append(VirtualHost(name: "h\(h)", routes: routes))
    domains.append(["svc\(h).example.com", "*.svc\(h).internal"])
}
let table = RouteTable(name: "bench", virtualHosts: hosts, domains: domains)
let routed = BenchRequest(path: Array("/api/v7/users".utf8), host: Array("svc14.example.com".utf8), headers: [(Array("x-env".utf8), Array("prod".utf8))])
let wildcard = BenchRequest(path: Array("/api/v3/x".utf8), host: Array("a.svc9.internal".utf8), headers: [])

let head = HTTPHead()
let limits = HTTPLimits()
var sink = 0
var results: [Measurement] = []
// TERN_BENCH_N: iterations (fewer under valgrind, whose instruction counts repeat exactly).
let n = getenv("TERN_BENCH_N").flatMap { Int(String(cString: $0)) } ?? 2_000_000

results.append(measure("http1 parse request head (9 fields, \(request.count) B)", iterations: n) {
    var scanned = 0
    let r = request.withUnsafeBufferPointer { HTTPParser.parseRequest($0.baseAddress!, $0.count, limits: limits, head: head, scanned: &scanned) }
    if r == .complete { sink &+= head.fields.count }
})
results.append(measure("http1 parse response head (6 fields)", iterations: n) {
    var scanned = 0
    let r = response.withUnsafeBufferPointer { HTTPParser.parseResponse($0.baseAddress!, $0.count, limits: limits, head: head, requestMethod: .get, scanned: &scanned) }
    if r == .complete { sink &+= head.status }
})
results.append(measure("http1 chunked decode (1 KiB chunk + last)", iterations: n) {
    var d = ChunkedDecoder()
    chunked.withUnsafeBufferPointer { b in
        var off = 0
        while off < b.count {
            let (used, event) = d.next(b.baseAddress! + off, b.count - off)
            off += used
            if event == .end { break }
        }
        sink &+= off
    }
})
results.append(measure("router: exact host, 8th route with header match (200 routes)", iterations: n) {
    if table.route(routed) != nil { sink &+= 1 }
})
results.append(measure("router: wildcard host, 4th route", iterations: n) {
    if table.route(wildcard) != nil { sink &+= 1 }
})
// Route regexes as MOSN configs write them: an anchored path pattern and an unanchored SOFA
// service pattern (Go's MatchString semantics: a search).
let pathRegex = try! RouteRegex("^/api/v[0-9]+/users/[0-9]+/profile$")
let pathInput = Array("/api/v1/users/12345/profile".utf8)
let serviceRegex = try! RouteRegex("com\\.alipay\\..*Service:1\\.0")
let serviceInput = Array("com.alipay.sofa.rpc.EchoService:1.0".utf8)
results.append(measure("regex: ^/api/v[0-9]+/users/[0-9]+/profile$ (27 B, match)", iterations: n) {
    if pathInput.withUnsafeBufferPointer({ pathRegex.matches($0) }) { sink &+= 1 }
})
results.append(measure("regex: com\\.alipay\\..*Service:1\\.0 search (35 B, match)", iterations: n) {
    if serviceInput.withUnsafeBufferPointer({ serviceRegex.matches($0) }) { sink &+= 1 }
})
// \b keeps a pattern on the Pike VM (no automaton): the slow path's cost.
let wordRegex = try! RouteRegex("^/api/\\bv[0-9]+\\b/users/[0-9]+/profile$")
results.append(measure("regex: same path pattern with \\b (Pike VM, 27 B, match)", iterations: n) {
    if pathInput.withUnsafeBufferPointer({ wordRegex.matches($0) }) { sink &+= 1 }
})

func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
func oneDecimal(_ v: Double) -> String {
    let tenths = Int((v * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}
print(pad("benchmark", 64) + pad("ns/op", 10) + "allocs/op")
for m in results {
    print(pad(m.name, 64) + pad(oneDecimal(m.nsPerOp), 10) + oneDecimal(m.allocsPerOp))
}
if sink == 42 { print("") }
