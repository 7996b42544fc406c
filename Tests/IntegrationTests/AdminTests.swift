import Foundation
import Glibc
import Testing
import TernTestSupport

// The admin API and the Prometheus sink against the real binary (issue 12): every path with good
// and bad input, counters equal to the traffic sent, the log level changed on a live process,
// probes while draining, and a scrape that parses. Run alone with `swift test --filter Admin`.

extension Tag {
    @Tag static var admin: Self
}

/// Two listeners: "web" (HTTP/1: /up/ to the Python upstream, /direct answered by Tern, /dead to
/// a port nobody listens on, anything else 404) and "rpc" (bolt to the anthunder server).
func adminTestConfig(web: UInt16, rpc: UInt16, admin: UInt16, prometheus: UInt16, upstream: UInt16, boltUpstream: UInt16, dead: UInt16,
                     logPath: String = "stderr") -> String {
    """
    { "servers": [{ "default_log_path": "\(logPath)", "default_log_level": "INFO",
        "routers": [
          { "router_config_name": "http", "virtual_hosts": [{ "name": "h", "domains": ["*"], "routers": [
             { "match": {"prefix": "/up/"}, "route": {"cluster_name": "up", "prefix_rewrite": "/"} },
             { "match": {"path": "/direct"}, "direct_response": {"status": 200, "body": "d"} },
             { "match": {"prefix": "/dead/"}, "route": {"cluster_name": "dead"} } ] }] },
          { "router_config_name": "bolt", "virtual_hosts": [{ "name": "b", "domains": ["*"], "routers": [
             { "match": {"headers": [{"name": "service", "value": "\(echoService)"}]}, "route": {"cluster_name": "boltup", "timeout": "3s"} } ] }] } ],
        "listeners": [
          { "name": "web", "address": "127.0.0.1:\(web)", "bind_port": true,
            "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "http" } }] }] },
          { "name": "rpc", "address": "127.0.0.1:\(rpc)", "bind_port": true,
            "filter_chains": [{ "filters": [{ "type": "proxy", "config": { "downstream_protocol": "bolt", "upstream_protocol": "bolt", "router_config_name": "bolt" } }] }] } ] }],
      "cluster_manager": { "clusters": [
         { "name": "up", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "hosts": [{ "address": "127.0.0.1:\(upstream)" }] },
         { "name": "boltup", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "hosts": [{ "address": "127.0.0.1:\(boltUpstream)" }] },
         { "name": "dead", "type": "SIMPLE", "lb_type": "LB_ROUNDROBIN", "connect_timeout": "1s", "hosts": [{ "address": "127.0.0.1:\(dead)" }] } ] },
      "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": \(admin) } } },
      "metrics": { "sinks": [{ "type": "prometheus", "config": { "port": \(prometheus), "endpoint": "/metrics" } }] } }
    """
}

/// One request on a fresh connection to the admin (or Prometheus) port; the connection is closed.
func adminRequest(_ port: UInt16, _ method: String, _ target: String, body: String? = nil, headers: String = "") throws -> HTTPResponse {
    let c = try RawClient(port: port, timeout: 5)
    defer { c.close() }
    var request = "\(method) \(target) HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\(headers)"
    if let body { request += "Content-Length: \(body.utf8.count)\r\n\r\n\(body)" } else { request += "\r\n" }
    c.send(request)
    guard let r = HTTPResponse.parseAll(c.readAll()).first else { throw TestError("no answer to \(method) \(target)") }
    return r
}

func jsonObject(_ r: HTTPResponse) throws -> [String: Any] {
    guard let o = try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any] else { throw TestError("not a JSON object: \(r.bodyText)") }
    return o
}

/// The counters of `name` in section `section` ("listener", "cluster") of /api/v1/stats.
func counters(_ stats: [String: Any], _ section: String, _ name: String) -> [String: Int] {
    ((stats[section] as? [String: Any])?[name] as? [String: Any] ?? [:]).compactMapValues { $0 as? Int }
}

/// Reads from `c` until `complete` holds for everything read (or the client's timeout passes).
func readUntil(_ c: RawClient, _ complete: ([UInt8]) -> Bool) -> [UInt8] {
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while !complete(data) {
        let n = buf.withUnsafeMutableBytes { read(c.fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        data.append(contentsOf: buf[0..<n])
    }
    return data
}

/// Whole bolt v1 responses in `data` (20-byte header, then class, header and content lengths).
func boltResponseCount(_ data: [UInt8]) -> Int {
    var at = 0, n = 0
    while data.count - at >= 20 {
        func u16(_ o: Int) -> Int { Int(data[at + o]) << 8 | Int(data[at + o + 1]) }
        let length = 20 + u16(12) + u16(14) + (u16(16) << 16 | u16(18))
        guard data.count - at >= length else { break }
        at += length
        n += 1
    }
    return n
}

/// The Prometheus text format, strictly: HELP and TYPE once per family before its samples,
/// counters named `_total`, histograms as `_bucket` (with `le`, cumulative, ending at `+Inf`
/// equal to `_count`), `_sum` and `_count`, names and labels well formed, every value a number.
func prometheusFormatProblems(_ text: String) -> [String] {
    var problems: [String] = []
    var types: [String: String] = [:], helped: Set<String> = []
    var lastBucket: [String: Double] = [:], infBucket: [String: Double] = [:]
    let name = try! NSRegularExpression(pattern: "^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    let sample = try! NSRegularExpression(pattern: #"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*\})? (-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)$"#)
    func matches(_ re: NSRegularExpression, _ s: String) -> NSTextCheckingResult? { re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) }
    guard text.hasSuffix("\n") else { return ["no final newline"] }
    for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init) {
        let parts = line.split(separator: " ", maxSplits: 3).map(String.init)
        if line.hasPrefix("# HELP ") {
            guard parts.count == 4, matches(name, parts[2]) != nil, !helped.contains(parts[2]) else { problems.append("bad HELP: \(line)"); continue }
            helped.insert(parts[2])
        } else if line.hasPrefix("# TYPE ") {
            guard parts.count == 4, ["counter", "gauge", "histogram"].contains(parts[3]), types[parts[2]] == nil, helped.contains(parts[2]) else { problems.append("bad TYPE: \(line)"); continue }
            if parts[3] == "counter" && !parts[2].hasSuffix("_total") { problems.append("counter without _total: \(parts[2])") }
            if parts[3] == "gauge" && parts[2].hasSuffix("_total") { problems.append("gauge named _total: \(parts[2])") }
            types[parts[2]] = parts[3]
        } else if let m = matches(sample, line), let r = Range(m.range(at: 1), in: line) {
            let series = String(line[r])
            if types[series] != nil { continue }
            let base = ["_bucket", "_sum", "_count"].first { series.hasSuffix($0) }.map { String(series.dropLast($0.count)) }
            guard let base, types[base] == "histogram" else { problems.append("sample before its TYPE: \(line)"); continue }
            if series.hasSuffix("_bucket") {
                guard let le = line.range(of: "le=\"") else { problems.append("bucket without le: \(line)"); continue }
                let labels = String(line[line.firstIndex(of: "{")!..<le.lowerBound])
                let value = Double(line.split(separator: " ").last!)!
                let key = base + labels
                if let previous = lastBucket[key], previous > value { problems.append("buckets not cumulative: \(line)") }
                lastBucket[key] = value
                if line.contains("le=\"+Inf\"") { infBucket[key] = value }
            } else if series.hasSuffix("_count") {
                let labels = line.firstIndex(of: "{").map { String(line[$0...].dropFirst().prefix { $0 != "}" }) + "," } ?? ""
                if infBucket[base + "{" + labels] != Double(line.split(separator: " ").last!) { problems.append("_count differs from the +Inf bucket: \(line)") }
            }
        } else {
            problems.append("bad line: \(line)")
        }
    }
    return problems
}

/// The sample `family{labels}` in a scrape, as a number.
func promValue(_ text: String, _ series: String) -> Double? {
    text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last!) }
}

@Suite(.serialized, .timeLimit(.minutes(5)), .tags(.admin))
final class AdminTests {
    let upstream: PythonUpstream
    let boltPort = freePort()
    let boltServer: ChildProcess
    let web = freePort(), rpc = freePort(), admin = freePort(), prometheus = freePort()

    init() throws {
        upstream = try PythonUpstream()
        boltServer = try startBoltServer(port: boltPort)
    }
    deinit {
        upstream.stop()
        boltServer.stop()
    }

    func startTern(workers: Int = 2, logPath: String = "stderr") throws -> TernProcess {
        try TernProcess(config: adminTestConfig(web: web, rpc: rpc, admin: admin, prometheus: prometheus, upstream: upstream.port,
                                                boltUpstream: boltPort, dead: freePort(), logPath: logPath),
                        waitFor: [web, rpc, admin, prometheus], extraArguments: ["--workers", String(workers)])
    }

    /// Known traffic on two listeners over several connections (spread over two workers by the
    /// kernel); the merged counters equal it exactly, in the JSON and in the scrape.
    @Test func countersEqualTheTrafficExactly() throws {
        let tern = try startTern()
        defer { tern.stop() }
        // The start-up readiness probe connected once to each listener: counted, and the baseline.
        let before = try jsonObject(try adminRequest(admin, "GET", "/api/v1/stats"))
        let webBefore = counters(before, "listener", "web")["connections_total"] ?? -1, rpcBefore = counters(before, "listener", "rpc")["connections_total"] ?? -1
        #expect(webBefore == 1 && rpcBefore == 1, "\(before)")
        var httpSent = 0, httpReceived = 0
        // 3 connections: 7 proxied 200s, 3 direct 200s, 2 no-route 404s, 1 connect failure 502.
        let plan: [[String]] = [["/up/a", "/up/b", "/direct", "/nomatch", "/up/c"], ["/direct", "/up/d", "/up/e", "/dead/x"],
                                ["/nomatch", "/up/f", "/direct", "/up/g"]]
        for targets in plan {
            let c = try RawClient(port: web, timeout: 10)
            for t in targets {
                let request = "GET \(t) HTTP/1.1\r\nHost: x\r\n\r\n"
                c.send(request)
                httpSent += request.utf8.count
                let data = readUntil(c) { HTTPResponse.parseAll($0).count == 1 }
                #expect(HTTPResponse.parseAll(data).count == 1, "\(t)")
                httpReceived += data.count
            }
            c.close()
        }
        // Bolt: 5 calls routed to the echo service, 1 to a service no route knows (answered by Tern).
        let b = try RawClient(port: rpc, timeout: 10)
        var boltSent = 0
        for id in 1...5 {
            let frame = BoltTestFrame.request(id: UInt32(id), service: echoService, method: "echo", body: Array("m\(id)".utf8))
            b.send(frame)
            boltSent += frame.count
        }
        let unrouted = BoltTestFrame.request(id: 6, service: "com.nobody.Service:1.0", method: "echo", body: [1])
        b.send(unrouted)
        boltSent += unrouted.count
        let boltData = readUntil(b) { boltResponseCount($0) == 6 }
        #expect(boltResponseCount(boltData) == 6)
        b.close()

        // Closed connections are counted once their close reaches Tern: poll until none is active.
        var stats: [String: Any] = [:]
        let settled = waitUntil(timeout: 10) {
            guard let r = try? adminRequest(admin, "GET", "/api/v1/stats"), r.status == 200, let s = try? jsonObject(r) else { return false }
            stats = s
            return counters(s, "listener", "web")["connections_active"] == 0 && counters(s, "listener", "rpc")["connections_active"] == 0
        }
        #expect(settled, "\(stats)")
        let webStats = counters(stats, "listener", "web")
        #expect(webStats["connections_total"] == webBefore + 3)
        #expect(webStats["requests_total"] == 13)
        #expect(webStats["http_responses_2xx"] == 10 && webStats["http_responses_4xx"] == 2 && webStats["http_responses_5xx"] == 1, "\(webStats)")
        let codes = ((stats["listener"] as? [String: Any])?["web"] as? [String: Any])?["http_responses_by_code"] as? [String: Int]
        #expect(codes == ["200": 10, "404": 2, "502": 1], "\(String(describing: codes))")
        #expect(webStats["received_bytes_total"] == httpSent && webStats["sent_bytes_total"] == httpReceived, "\(webStats) sent \(httpSent) received \(httpReceived)")
        let rpcStats = counters(stats, "listener", "rpc")
        #expect(rpcStats["connections_total"] == rpcBefore + 1 && rpcStats["requests_total"] == 6)
        #expect(rpcStats["bolt_responses_success"] == 5 && rpcStats["bolt_responses_failed"] == 1, "\(rpcStats)")
        #expect(rpcStats["received_bytes_total"] == boltSent && rpcStats["sent_bytes_total"] == boltData.count, "\(rpcStats)")
        let up = counters(stats, "cluster", "up")
        #expect(up["requests_total"] == 7 && up["http_responses_2xx"] == 7 && up["requests_active"] == 0, "\(up)")
        let dead = counters(stats, "cluster", "dead")
        #expect(dead["requests_total"] == 1 && dead["connect_failures_total"] == 1 && dead["http_responses_5xx"] == 1, "\(dead)")
        let boltup = counters(stats, "cluster", "boltup")
        #expect(boltup["requests_total"] == 5 && boltup["bolt_responses_status_0"] == 5, "\(boltup)")
        // Response times: one per answered upstream request, in buckets that add up.
        let upTimes = ((stats["cluster"] as? [String: Any])?["up"] as? [String: Any])?["upstream_response_time_ms"] as? [String: Int] ?? [:]
        #expect(upTimes["count"] == 7 && upTimes["le_inf"] == 7 && (upTimes["le_1ms"] ?? -1) <= (upTimes["le_10000ms"] ?? -1), "\(upTimes)")
        let hosts = (stats["host"] as? [String: Any])?["up"] as? [String: Any]
        let upHost = hosts?["127.0.0.1:\(upstream.port)"] as? [String: Any]
        #expect(upHost?["requests_total"] as? Int == 7, "\(String(describing: hosts))")
        // Gauges: nothing in flight now; the keep-alive pool holds at least one connection to it.
        #expect(upHost?["requests_active"] as? Int == 0 && (upHost?["connections_open"] as? Int ?? 0) >= 1, "\(String(describing: upHost))")
        #expect((stats["workers"] as? [String: Any])?["answered"] as? Int == 2 && stats["note"] == nil)

        // stats_glob: the same counters as name:value lines.
        let glob = try adminRequest(admin, "GET", "/api/v1/stats_glob")
        #expect(glob.status == 200 && glob.bodyText.contains("listener.web.requests_total:13\n") && glob.bodyText.contains("listener.web.http_responses_code_404:2\n") && glob.bodyText.contains("cluster.up.requests_total:7\n"))

        // The scrape: the same figures, in a format Prometheus accepts.
        let scrape = try adminRequest(prometheus, "GET", "/metrics")
        #expect(scrape.status == 200 && scrape.header("content-type")?.hasPrefix("text/plain; version=0.0.4") == true)
        let text = scrape.bodyText
        #expect(prometheusFormatProblems(text).isEmpty, "\(prometheusFormatProblems(text))")
        #expect(promValue(text, "tern_listener_requests_total{listener=\"web\"}") == 13)
        #expect(promValue(text, "tern_listener_http_responses_total{listener=\"web\",class=\"4xx\"}") == 2)
        #expect(promValue(text, "tern_listener_http_responses_by_code_total{listener=\"web\",code=\"502\"}") == 1)
        #expect(promValue(text, "tern_listener_bolt_responses_total{listener=\"rpc\",result=\"success\"}") == 5)
        #expect(promValue(text, "tern_cluster_bolt_responses_total{cluster=\"boltup\",status=\"0\"}") == 5)
        #expect(promValue(text, "tern_host_requests_total{cluster=\"up\",host=\"127.0.0.1:\(upstream.port)\"}") == 7)
        #expect(promValue(text, "tern_cluster_upstream_response_time_seconds_count{cluster=\"up\"}") == 7)
        // Per host: the one host of `up` answered all 7; the bolt host all 5.
        #expect(promValue(text, "tern_host_upstream_response_time_seconds_count{cluster=\"up\",host=\"127.0.0.1:\(upstream.port)\"}") == 7)
        #expect(promValue(text, "tern_host_upstream_response_time_seconds_bucket{cluster=\"up\",host=\"127.0.0.1:\(upstream.port)\",le=\"+Inf\"}") == 7)
        #expect(promValue(text, "tern_host_upstream_response_time_seconds_count{cluster=\"boltup\",host=\"127.0.0.1:\(boltPort)\"}") == 5, "\(text)")
        // By code per cluster: the sum over codes is the cluster's HTTP answers.
        let upCodes = text.split(separator: "\n").filter { $0.hasPrefix("tern_cluster_http_responses_by_code_total{cluster=\"up\"") }
        let byCode: Int = upCodes.compactMap { Int($0.split(separator: " ").last ?? "") }.reduce(0, +)
        var byClass = 0
        for c in ["2xx", "4xx", "5xx"] { byClass += Int(promValue(text, "tern_cluster_http_responses_total{cluster=\"up\",class=\"\(c)\"}") ?? -100) }
        #expect(byCode == byClass && byCode > 0, "\(upCodes)")
        #expect(!upCodes.isEmpty)
        #expect(promValue(text, "tern_cluster_upstream_response_time_seconds_bucket{cluster=\"boltup\",le=\"+Inf\"}") == 5)
        #expect((promValue(text, "process_resident_memory_bytes") ?? 0) > 1_000_000)
        #expect((promValue(text, "tern_host_connections_open{cluster=\"up\",host=\"127.0.0.1:\(upstream.port)\"}") ?? 0) >= 1)
        #expect(abs((promValue(text, "process_start_time_seconds") ?? 0) - Date().timeIntervalSince1970) < 600)
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool") {
            let file = NSTemporaryDirectory() + "tern-scrape-\(UUID().uuidString).txt"
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: file) }
            let check = try ChildProcess("/bin/sh", ["-c", "promtool check metrics < \(file)"], name: "promtool")
            #expect(check.waitForExit(timeout: 30) == 0, "promtool: \(check.output)")
        }
    }

    @Test func everyAdminPathAnswersGoodAndBadInput() throws {
        let tern = try startTern(workers: 1)
        defer { tern.stop() }
        // Reads.
        let stats = try adminRequest(admin, "GET", "/api/v1/stats")
        #expect(stats.status == 200 && stats.header("content-type") == "application/json")
        #expect(try jsonObject(stats)["listener"] != nil)
        let dump = try adminRequest(admin, "GET", "/api/v1/config_dump")
        let dumped = try jsonObject(dump)
        #expect(dump.status == 200 && dumped["servers"] != nil)
        let clusters = try jsonObject(try adminRequest(admin, "GET", "/api/v1/config_dump?allclusters"))
        #expect(Set(clusters.keys) == ["up", "boltup", "dead"])
        #expect(try adminRequest(admin, "GET", "/api/v1/config_dump?listener=web").bodyText.contains("\"Http1\""))
        #expect(try adminRequest(admin, "GET", "/api/v1/config_dump?listener=nope").status == 404)
        #expect(try adminRequest(admin, "GET", "/api/v1/config_dump?frob=1").status == 400)
        #expect(try adminRequest(admin, "GET", "/api/v1/config_dump?allclusters&alllisteners").status == 400)
        let states = try adminRequest(admin, "GET", "/api/v1/states")
        #expect(states.bodyText == "pid=\(tern.child.pid)&state=6\n")
        let features = try jsonObject(try adminRequest(admin, "GET", "/api/v1/features"))
        #expect(features["admin_api"] as? Bool == true && features["hot_upgrade"] as? Bool == true && features["config_reload"] as? Bool == true && features["access_logs"] as? Bool == true)
        #expect(try adminRequest(admin, "GET", "/api/v1/features?key=prometheus_sink").bodyText == "true")
        #expect(try adminRequest(admin, "GET", "/api/v1/get_loglevel").bodyText == "{\"stderr\": \"INFO\"}\n")
        #expect(try adminRequest(admin, "GET", "/ready").status == 200)
        #expect(try adminRequest(admin, "GET", "/healthz").bodyText == "ok\n")
        #expect(try adminRequest(admin, "GET", "/").bodyText.contains("/api/v1/stats\n"))
        // Wrong methods, unknown paths.
        for (method, path) in [("POST", "/api/v1/stats"), ("GET", "/api/v1/update_loglevel"), ("DELETE", "/api/v1/config_dump"),
                               ("GET", "/api/v1/enable_log"), ("POST", "/healthz")] {
            let r = try adminRequest(admin, method, path, body: method == "GET" ? nil : "")
            #expect(r.status == 405 && r.header("allow") != nil, "\(method) \(path): \(r.status)")
        }
        #expect(try adminRequest(admin, "GET", "/api/v1/nope").status == 404)
        #expect(try adminRequest(admin, "GET", "/metrics").status == 404)
        #expect(try adminRequest(prometheus, "GET", "/api/v1/stats").status == 404)
        #expect(try adminRequest(prometheus, "POST", "/metrics", body: "").status == 405)
        // Log level: bad level, bad JSON, another log's path.
        for body in [#"{"log_path": "stderr", "log_level": "LOUD"}"#, #"{"log_path": "stderr", "log_level": "debug"}"#, "not json", "[]",
                     #"{"log_path": "/var/log/other.log", "log_level": "DEBUG"}"#, #"{"log_path": 3, "log_level": "DEBUG"}"#] {
            let r = try adminRequest(admin, "POST", "/api/v1/update_loglevel", body: body)
            #expect(r.status == 400 && r.bodyText.contains("\"error\""), "\(body): \(r.status) \(r.bodyText)")
        }
        #expect(try adminRequest(admin, "GET", "/api/v1/get_loglevel").bodyText.contains("INFO"))
        #expect(try adminRequest(admin, "POST", "/api/v1/disable_log", body: "/var/log/other.log").status == 400)
        #expect(try adminRequest(admin, "POST", "/api/v1/enable_log", body: "").status == 400)
        // Bounds: a head over 8 KiB, a body over 64 KiB (refused before it is sent), chunked.
        #expect(try adminRequest(admin, "GET", "/healthz", headers: "X-Big: \(String(repeating: "a", count: 9000))\r\n").status == 431)
        let big = try RawClient(port: admin, timeout: 5)
        big.send("POST /api/v1/enable_log HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n\r\n")
        #expect(HTTPResponse.parseAll(big.readAll()).first?.status == 413)
        big.close()
        #expect(try adminRequest(admin, "POST", "/api/v1/enable_log", headers: "Transfer-Encoding: chunked\r\n\r\n0\r\n").status == 411)
        #expect(try adminRequest(admin, "GARBAGE\u{1}", "/").status == 400)
    }

    /// Keep-alive: several requests on one connection, pipelined, one of them waiting for the
    /// workers' counters, answered in order; `Connection: close` is honoured.
    @Test func keepAliveAndPipelinedRequestsAreAnsweredInOrder() throws {
        let tern = try startTern()
        defer { tern.stop() }
        let c = try RawClient(port: admin, timeout: 5)
        c.send("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /api/v1/stats HTTP/1.1\r\nHost: a\r\n\r\nGET /api/v1/states HTTP/1.1\r\nHost: a\r\n\r\n")
        let r = c.readResponses(3)
        #expect(r.map(\.status) == [200, 200, 200])
        #expect(r.count == 3 && r[0].bodyText == "ok\n" && r[1].bodyText.contains("\"listener\"") && r[2].bodyText.hasPrefix("pid="))
        c.send("GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        let last = HTTPResponse.parseAll(c.readAll())   // readAll ends when Tern closes
        #expect(last.count == 1 && last.first?.header("connection") == "close")
        c.close()
        // A client that sends and shuts its side gets every answer, then the close.
        let h = try RawClient(port: admin, timeout: 5)
        h.send("GET /api/v1/stats HTTP/1.1\r\nHost: a\r\n\r\nGET /ready HTTP/1.1\r\nHost: a\r\n\r\n")
        _ = shutdown(h.fd, Int32(SHUT_WR))
        #expect(HTTPResponse.parseAll(h.readAll()).map(\.status) == [200, 200])
        h.close()
    }

    /// The level is read by every worker on each log call: raising it to DEBUG makes a worker's
    /// DEBUG line appear; disable_log silences even errors; enable_log brings them back.
    @Test func logLevelChangesReachTheWorkers() throws {
        let logPath = NSTemporaryDirectory() + "tern-admin-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: logPath) }
        let tern = try startTern(logPath: logPath)
        defer { tern.stop() }
        func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
        func send(_ target: String) throws {
            let c = try RawClient(port: web, timeout: 10)
            c.send("GET \(target) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            _ = c.readAll()
            c.close()
        }
        try send("/up/a")
        #expect(!log().contains("[DEBUG]"))
        let r = try adminRequest(admin, "POST", "/api/v1/update_loglevel", body: "{\"log_path\": \"\(logPath)\", \"log_level\": \"DEBUG\"}")
        #expect(r.status == 200, "\(r.bodyText)")
        #expect(try adminRequest(admin, "GET", "/api/v1/get_loglevel").bodyText == "{\(String(reflecting: logPath)): \"DEBUG\"}\n")
        for _ in 0..<4 { try send("/up/b") }   // several connections: both workers see the change
        // Every proxied request logs "exchange done" at DEBUG (a pooled upstream connection may
        // be reused, so "new upstream connection" need not appear).
        #expect(waitUntil(timeout: 5) { log().contains("[DEBUG] [http1] exchange done") }, "\(log().suffix(2000))")
        #expect(try adminRequest(admin, "POST", "/api/v1/disable_log", body: logPath).status == 200)
        try send("/dead/x")
        #expect(try adminRequest(admin, "POST", "/api/v1/enable_log", body: logPath).status == 200)
        #expect(!log().contains("upstream_connect_failed"), "a disabled log still wrote: \(log().suffix(1000))")
        try send("/dead/y")
        #expect(waitUntil(timeout: 5) { log().contains("upstream_connect_failed") })
    }

    /// While draining (SIGTERM with a request in flight) the probes answer 503 and states says 8
    /// (MOSN's GracefulStopping); the request in flight still completes.
    @Test func probesAnswer503WhileDraining() throws {
        let tern = try startTern(workers: 1)
        defer { tern.stop() }
        let c = try RawClient(port: web, timeout: 10)
        c.send("GET /up/slow?ms=2500 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(waitUntil(timeout: 5) { (try? adminRequest(admin, "GET", "/api/v1/stats")).map { counters((try? jsonObject($0)) ?? [:], "cluster", "up")["requests_active"] == 1 } ?? false })
        #expect(try adminRequest(admin, "GET", "/healthz").status == 200)
        tern.child.signal(SIGTERM)
        #expect(waitUntil(timeout: 2) { (try? adminRequest(admin, "GET", "/healthz"))?.status == 503 })
        #expect(try adminRequest(admin, "GET", "/ready").status == 503)
        #expect(try adminRequest(admin, "GET", "/api/v1/states").bodyText == "pid=\(tern.child.pid)&state=8\n")
        #expect(c.readResponses(1).first?.status == 200)
        c.close()
        #expect(tern.child.waitForExit(timeout: 10) == 0)
    }

    /// A port the admin API cannot take fails the start with the key named, before any traffic.
    @Test func anAdminPortInUseFailsTheStart() throws {
        let holder = try TCPPeer(port: 0) { _ in }
        defer { holder.stop() }
        let config = adminTestConfig(web: web, rpc: rpc, admin: holder.port, prometheus: prometheus, upstream: upstream.port, boltUpstream: boltPort, dead: freePort())
        let path = NSTemporaryDirectory() + "tern-admin-inuse-\(UUID().uuidString).json"
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let child = try ChildProcess(TestPaths.ternBinary, ["start", "-c", path], name: "tern-inuse")
        #expect(child.waitForExit(timeout: 10) == 1)
        #expect(child.output.contains("admin: bind 127.0.0.1:\(holder.port)"), "\(child.output)")
        #expect(!canConnect(web))
    }
}
