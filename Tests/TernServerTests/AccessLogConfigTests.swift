import Foundation
import Testing
@testable import TernServer
@testable import TernCore

/// `access_logs` as config: MOSN's format rules, errors that name the JSON path, files shared by
/// listeners, and the format's fields.
struct AccessLogConfigTests {
    func withLogs(_ logs: String) -> String {
        config().replacingOccurrences(of: "\"bind_port\": true,", with: "\"bind_port\": true, \"access_logs\": \(logs),")
    }

    @Test func anEmptyFormatIsMOSNsDefaultAndEveryDefaultVariableIsKnown() throws {
        let r = load(withLogs(#"[{"log_path": "/tmp/a.log"}, {"log_path": "/tmp/b.log", "log_format": "%request_method% %response_code%"}]"#))
        #expect(r.diagnostics.errors.isEmpty && r.diagnostics.warnings.isEmpty, "\(r.diagnostics.errors) \(r.diagnostics.warnings)")
        let plan = try #require(r.plan)
        #expect(plan.accessLogPaths == ["/tmp/a.log", "/tmp/b.log"])
        let settings = try #require(Server.proxySettingsInBuildOrder(plan).first)
        let logs = try #require(settings.accessLogs)
        #expect(logs.logs.map(\.file) == [0, 1])
        #expect(!logs.logs[0].format.fields.contains(.unknown))
        #expect(logs.logs[0].format.fields.filter { if case .text = $0 { return false } else { return true } }.count == 17)
    }

    @Test func badFormatsAndPathsAreErrorsNamingTheirPath() {
        for (logs, path) in [(#"[{"log_path": "/tmp/a.log", "log_format": "%start_time"}]"#, "access_logs[0].log_format"),
                             (#"[{"log_path": "/tmp/a.log", "log_format": "a %% b"}]"#, "access_logs[0].log_format"),
                             (#"[{"log_path": "/no/such/dir/a.log"}]"#, "access_logs[0].log_path"),
                             (#"[{"log_format": "%duration%"}]"#, "access_logs[0].log_path"),
                             (#"[{"log_path": ""}]"#, "access_logs[0].log_path")] {
            let r = load(withLogs(logs))
            #expect(r.diagnostics.errors.contains { $0.contains("$.servers[0].listeners[0].\(path)") }, "\(logs): \(r.diagnostics.errors)")
        }
    }

    @Test func anUnknownVariableIsWrittenAsADashWithAWarning() throws {
        let r = load(withLogs(#"[{"log_path": "stdout", "log_format": "%istio_field% %duration%"}]"#))
        #expect(r.diagnostics.errors.isEmpty)
        #expect(r.diagnostics.warnings.contains { $0.contains("access_logs[0].log_format") && $0.contains("%istio_field%") })
        // Access logs observe: a key Tern does not know is a warning, not an error.
        let other = load(withLogs(#"[{"log_path": "stdout", "format": "x"}]"#))
        #expect(other.diagnostics.errors.isEmpty && other.diagnostics.warnings.contains { $0.contains("access_logs[0].format") })
    }

    @Test func formatsFollowMOSNsParsingRules() throws {
        var captures = AccessLogCaptures()
        let f = try AccessLogFormat.parse(#"[%start_time%] "%request_header_User-Agent%" 100\% %request_method%%response_code%"#, captures: &captures)
        #expect(f.fields == [.text(Array("[".utf8)), .startTime, .text(Array("] \"".utf8)), .captured(0), .text(Array("\" 100\\% ".utf8)),
                             .captured(1), .responseCode])
        #expect(captures.items == [.requestHeader(Array("user-agent".utf8)), .method])
        // A second format of the same listener shares the slots.
        let g = try AccessLogFormat.parse("%x-mosn-method% %response_header_Content-Type%", captures: &captures)
        #expect(g.fields == [.captured(1), .text([32]), .captured(2)])
        #expect(captures.capturesResponse && captures.requestItems == 2)
        #expect(throws: AccessLogFormat.ParseError.unclosedVariable) { try AccessLogFormat.parse("%a", captures: &captures) }
        #expect(throws: AccessLogFormat.ParseError.emptyVariable(at: 1)) { try AccessLogFormat.parse("%%", captures: &captures) }
        var many = AccessLogCaptures()
        let tooMany = (0...AccessLogCaptures.maxSlots).map { "%request_header_h\($0)%" }.joined()
        #expect(throws: AccessLogFormat.ParseError.tooManyValues) { try AccessLogFormat.parse(tooMany, captures: &many) }
    }

    @Test func durationsPrintAsGoPrintsThem() {
        func go(_ us: Int64) -> String { let out = ByteBuffer(); AccessLogOutput.goDuration(us, out); return String(decoding: out.readableArray(), as: UTF8.self) }
        #expect(go(0) == "0s")
        #expect(go(-5) == "0s")
        #expect(go(1) == "1µs")
        #expect(go(999) == "999µs")
        #expect(go(1000) == "1ms")
        #expect(go(1234) == "1.234ms")
        #expect(go(1200) == "1.2ms")
        #expect(go(1_000_000) == "1s")
        #expect(go(2_500_000) == "2.5s")
        #expect(go(61_000_001) == "1m1.000001s")
        #expect(go(3_600_000_000) == "1h0m0s")
        #expect(go(3_723_400_000) == "1h2m3.4s")
    }

    @Test func wireBytesThatCouldForgeALineAreEscaped() {
        let out = ByteBuffer()
        Array("a\"b\\c\nd\u{7f}é".utf8).withUnsafeBufferPointer { AccessLogOutput.appendEscaped($0.baseAddress!, $0.count, out) }
        #expect(String(decoding: out.readableArray(), as: UTF8.self) == #"a\x22b\\c\x0Ad\x7F\xC3\xA9"#)
        let plain = ByteBuffer()
        Array("curl/8.0".utf8).withUnsafeBufferPointer { AccessLogOutput.appendEscaped($0.baseAddress!, $0.count, plain) }
        #expect(plain.readableArray() == Array("curl/8.0".utf8))
    }
}
