import Foundation
import Testing
@testable import TernServer
import TernCore

/// DNS messages byte by byte: the query Tern sends, and answers (good, hostile, cut at every byte).
struct DNSMessageTests {
    /// An answer to `id` for `name` with the given A/AAAA addresses, names compressed to the question.
    func answer(id: UInt16, name: String, type: DNSRecordType = .a, addresses: [[UInt8]], ttl: UInt32 = 30,
                flags: UInt16 = 0x8180, cname: String? = nil) -> [UInt8] {
        var out: [UInt8] = []
        func u16(_ v: UInt16) { out += [UInt8(v >> 8), UInt8(v & 0xFF)] }
        func u32(_ v: UInt32) { u16(UInt16(v >> 16)); u16(UInt16(v & 0xFFFF)) }
        u16(id); u16(flags); u16(1); u16(UInt16(addresses.count + (cname == nil ? 0 : 1))); u16(0); u16(0)
        out += DNSMessage.encodeName(name)!
        u16(type.rawValue); u16(1)
        var owner: [UInt8] = [0xC0, 12]
        if let cname {
            let target = DNSMessage.encodeName(cname)!
            out += owner; u16(5); u16(1); u32(ttl); u16(UInt16(target.count)); let at = out.count; out += target
            owner = [0xC0, UInt8(at)]
        }
        for a in addresses { out += owner; u16(type.rawValue); u16(1); u32(ttl); u16(UInt16(a.count)); out += a }
        return out
    }

    @Test func theQueryIsOneRecursiveQuestionWithEDNS() throws {
        let q = try #require(DNSMessage.query(id: 0xBEEF, name: "svc.Test.", type: .a))
        #expect(Array(q[0..<12]) == [0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1])
        #expect(Array(q[12..<22]) == [3, 115, 118, 99, 4, 84, 101, 115, 116, 0])
        #expect(Array(q[22..<26]) == [0, 1, 0, 1])
        #expect(Array(q[26...]) == [0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0])
        #expect(DNSMessage.query(id: 1, name: String(repeating: "a", count: 64) + ".test", type: .a) == nil)
        #expect(DNSMessage.query(id: 1, name: "a..b", type: .a) == nil)
        #expect(DNSMessage.query(id: 1, name: "", type: .a) == nil)
        #expect(DNSMessage.query(id: 1, name: (0..<130).map { _ in "a" }.joined(separator: "."), type: .a) == nil)
    }

    @Test func addressesTTLsAndCNAMEChains() {
        let two = answer(id: 7, name: "svc.test.", addresses: [[10, 0, 0, 1], [10, 0, 0, 2]], ttl: 5)
        #expect(DNSMessage.parseAnswer(two, id: 7, name: "SVC.test.", type: .a)
                == .addresses([DNSAddressRecord(address: [10, 0, 0, 1], ttl: 5), DNSAddressRecord(address: [10, 0, 0, 2], ttl: 5)]))
        let chained = answer(id: 7, name: "svc.test.", addresses: [[10, 0, 0, 3]], cname: "real.test.")
        #expect(DNSMessage.parseAnswer(chained, id: 7, name: "svc.test.", type: .a) == .addresses([DNSAddressRecord(address: [10, 0, 0, 3], ttl: 30)]))
        let v6 = answer(id: 9, name: "svc.test.", type: .aaaa, addresses: [Array(repeating: 0, count: 15) + [1]])
        #expect(DNSMessage.parseAnswer(v6, id: 9, name: "svc.test.", type: .aaaa) == .addresses([DNSAddressRecord(address: Array(repeating: 0, count: 15) + [1], ttl: 30)]))
        // A TTL with the top bit set reads as 0 (RFC 2181).
        #expect(DNSMessage.parseAnswer(answer(id: 7, name: "a.", addresses: [[1, 2, 3, 4]], ttl: 0x8000_0001), id: 7, name: "a.", type: .a)
                == .addresses([DNSAddressRecord(address: [1, 2, 3, 4], ttl: 0)]))
        // NODATA: the name exists with no record of that type.
        #expect(DNSMessage.parseAnswer(answer(id: 7, name: "a.", addresses: []), id: 7, name: "a.", type: .a) == .addresses([]))
    }

    @Test func errorsAndRepliesToSomethingElse() {
        let good = answer(id: 7, name: "svc.test.", addresses: [[10, 0, 0, 1]])
        #expect(DNSMessage.parseAnswer(answer(id: 7, name: "svc.test.", addresses: [], flags: 0x8183), id: 7, name: "svc.test.", type: .a) == .noSuchName)
        #expect(DNSMessage.parseAnswer(answer(id: 7, name: "svc.test.", addresses: [], flags: 0x8182), id: 7, name: "svc.test.", type: .a) == .failure("server failure (SERVFAIL)"))
        #expect(DNSMessage.parseAnswer(good, id: 8, name: "svc.test.", type: .a) == .failure("answer to another query (id 7, sent 8)"))
        #expect(DNSMessage.parseAnswer(good, id: 7, name: "other.test.", type: .a) == .failure("answer for another name"))
        #expect(DNSMessage.parseAnswer(good, id: 7, name: "svc.test.", type: .aaaa) == .failure("answer for another question type"))
        var query = good; query[2] &= 0x7F
        #expect(DNSMessage.parseAnswer(query, id: 7, name: "svc.test.", type: .a) == .failure("not a response (QR bit clear)"))
        // An A record of 5 bytes, and an answer count the message cannot hold.
        var long = good; long[long.count - 5] = 5; long.append(9)
        #expect(DNSMessage.parseAnswer(long, id: 7, name: "svc.test.", type: .a) == .failure("address record of 5 bytes"))
        var lying = good; lying[6] = 0x7F
        #expect(DNSMessage.parseAnswer(lying, id: 7, name: "svc.test.", type: .a) == .failure("answer count 32513 does not fit in the message"))
        // Truncated (TC) with nothing usable.
        #expect(DNSMessage.parseAnswer(answer(id: 7, name: "a.", addresses: [], flags: 0x8380), id: 7, name: "a.", type: .a)
                == .failure("truncated answer with no complete address record"))
    }

    @Test func compressionLoopsAndPointersForwardAreRefused() {
        var header: [UInt8] = [0, 7, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]
        // The question's name is a pointer to itself.
        var loop = header + [0xC0, 12, 0, 1, 0, 1]
        #expect(DNSMessage.parseAnswer(loop, id: 7, name: "a.", type: .a) == .failure("malformed question"))
        // A pointer forward.
        loop = header + [0xC0, 14, 1, 97, 0, 0, 1, 0, 1]
        #expect(DNSMessage.parseAnswer(loop, id: 7, name: "a.", type: .a) == .failure("malformed question"))
        // Reserved label types (0x40, 0x80).
        header += [0x41, 97, 0, 0, 1, 0, 1]
        #expect(DNSMessage.parseAnswer(header, id: 7, name: "a.", type: .a) == .failure("malformed question"))
    }

    @Test func everyPrefixOfAnAnswerIsAFailureNeverATrap() {
        let good = answer(id: 7, name: "svc.test.", addresses: [[10, 0, 0, 1], [10, 0, 0, 2]], cname: "real.test.")
        for n in 0..<good.count {
            if case .addresses = DNSMessage.parseAnswer(Array(good[0..<n]), id: 7, name: "svc.test.", type: .a) {
                Issue.record("a cut answer (\(n) of \(good.count) bytes) was read as complete")
            }
        }
        #expect(DNSMessage.parseAnswer(good, id: 7, name: "svc.test.", type: .a)
                == .addresses([DNSAddressRecord(address: [10, 0, 0, 1], ttl: 30), DNSAddressRecord(address: [10, 0, 0, 2], ttl: 30)]))
    }
}

/// resolv.conf, search lists, and the STRICT_DNS config keys.
struct StrictDNSConfigTests {
    let at = "$.cluster_manager.clusters[0]"
    func withCluster(_ keys: String, hosts: String = #"[{"address": "svc.test:8080", "weight": 3}]"#) -> ConfigResult {
        load(config(cluster: "\"name\": \"c\", \"type\": \"STRICT_DNS\", \"hosts\": \(hosts)\(keys.isEmpty ? "" : ", " + keys)"))
    }

    @Test func resolvConfAndTheNamesALookupTries() {
        let s = DNSResolverSettings.parseResolvConf("""
            # comment
            nameserver 10.0.0.53
            nameserver fd00::53 ; trailing
            nameserver not-an-ip
            search svc.cluster.local cluster.local
            options ndots:5 timeout:3 attempts:4 rotate
            """, port: 53)
        #expect(s.servers.map(\.description) == ["10.0.0.53:53", "[fd00::53]:53"])
        #expect(s.search == ["svc.cluster.local", "cluster.local"] && s.ndots == 5 && s.timeoutMS == 3000 && s.attempts == 4)
        // Kubernetes' ndots 5: a short name goes through the search list first.
        #expect(s.candidates(for: "redis") == ["redis.svc.cluster.local.", "redis.cluster.local.", "redis."])
        #expect(s.candidates(for: "a.b.c.d.e.f") == ["a.b.c.d.e.f.", "a.b.c.d.e.f.svc.cluster.local.", "a.b.c.d.e.f.cluster.local."])
        #expect(s.candidates(for: "exact.") == ["exact."])
        // No nameserver line: the local server, as glibc.
        #expect(DNSResolverSettings.parseResolvConf("domain example.com\n", port: 5353).servers.map(\.description) == ["127.0.0.1:5353"])
        #expect(DNSResolverSettings.parseResolvConf("domain example.com\n", port: 53).search == ["example.com"])
    }

    @Test func aStrictDNSClusterAndItsResolverKeys() throws {
        let r = withCluster(#""dns_refresh_rate": "2s", "respect_dns_ttl": true, "dns_lookup_family": "V6_ONLY", "dns_resolvers": {"servers": ["10.1.1.1", "::1"], "port": "5353", "search": ["x.local"], "ndots": 2, "timeout": 3, "attempts": 1}"#,
                            hosts: #"[{"address": "svc.test:8080", "weight": 3}, {"address": "plain.test"}, {"address": "127.0.0.9:81"}]"#)
        let plan = try #require(r.plan, "\(r.diagnostics.errors)")
        #expect(r.diagnostics.warnings.isEmpty, "\(r.diagnostics.warnings)")
        let spec = try #require(plan.strictDNS.first)
        #expect(spec.targets.map { "\($0.name):\($0.port)" } == ["svc.test:8080", "plain.test:80"])
        #expect(spec.refreshMS == 2000 && spec.respectTTL && spec.family == .aaaa)
        #expect(spec.resolver.servers.map(\.description) == ["10.1.1.1:5353", "[::1]:5353"])
        #expect(spec.resolver.search == ["x.local"] && spec.resolver.ndots == 2 && spec.resolver.timeoutMS == 3000 && spec.resolver.attempts == 1)
        // Before any answer: only the entry with an IP address is a host.
        #expect(plan.clusters[0].hosts.map(\.address.description) == ["127.0.0.9:81"] && plan.clusters[0].resolvesNames)
        // Resolved: each address a host with its entry's weight; the cluster's fingerprint follows the answer.
        let resolved = StrictDNSSpec.hostEntries([[DNSAddressRecord(address: [10, 0, 0, 2], ttl: 1), DNSAddressRecord(address: [10, 0, 0, 1], ttl: 1)], []], targets: spec.targets)
        let again = try #require(ConfigLoader.load(text: plan.sourceText, resolvedHosts: ["c": resolved]).plan)
        #expect(again.clusters[0].hosts.map(\.address.description) == ["127.0.0.9:81", "10.0.0.1:8080", "10.0.0.2:8080"])
        #expect(again.clusters[0].hosts.map(\.weight) == [1, 3, 3])
        #expect(again.clusters[0].fingerprint != plan.clusters[0].fingerprint)
        #expect(StrictDNSSpec.addressText(Array(repeating: 0, count: 15) + [1], port: 80) == "[::1]:80")
        // MOSN's defaults: 5 s, A records, the resolver file.
        let defaults = try #require(withCluster("").plan?.strictDNS.first)
        #expect(defaults.refreshMS == 5000 && !defaults.respectTTL && defaults.family == .a)
    }

    @Test func badResolverKeysAreErrorsWithTheirPaths() {
        #expect(withCluster(#""dns_lookup_family": "ALL""#).diagnostics.errors == ["\(at).dns_lookup_family: \"ALL\" is not a lookup family Tern (or MOSN) has (V4_ONLY, V6_ONLY)"])
        #expect(withCluster(#""dns_resolvers": {"servers": ["8.8.8.8:53"]}"#).diagnostics.errors
                == ["\(at).dns_resolvers.servers[0]: expected a DNS server's IP address (v4 or v6, no port: the port is dns_resolvers.port)"])
        #expect(withCluster(#""dns_resolvers": {"servers": ["8.8.8.8"], "port": "dns"}"#).diagnostics.errors == ["\(at).dns_resolvers.port: expected a port (1-65535)"])
        #expect(withCluster(#""dns_resolver_file": "/nonexistent/resolv.conf""#).diagnostics.errors.first?.hasPrefix("\(at).dns_resolver_file: cannot read the resolver file /nonexistent/resolv.conf") == true)
        #expect(withCluster("", hosts: #"[{"address": "bad name!:80"}]"#).diagnostics.errors == ["\(at).hosts[0].address: \"bad name!\" is neither an IP address nor a DNS name"])
        #expect(withCluster("", hosts: #"[{"address": "svc.test:0"}]"#).diagnostics.errors == ["\(at).hosts[0].address: invalid port in \"svc.test:0\" (1-65535)"])
        #expect(withCluster("", hosts: #"[{"address": "svc.test:80:81"}]"#).diagnostics.errors == ["\(at).hosts[0].address: invalid address \"svc.test:80:81\" (expected name:port or ip:port)"])
        // A name in a cluster that is not STRICT_DNS stays an error; the DNS keys are warned about there.
        let simple = load(config(cluster: #""name": "c", "type": "SIMPLE", "dns_refresh_rate": "1s", "hosts": [{"address": "127.0.0.1:80"}]"#))
        #expect(simple.diagnostics.errors.isEmpty && simple.diagnostics.warnings == ["\(at).dns_refresh_rate: read only for \"type\": \"STRICT_DNS\" clusters; ignored for SIMPLE"])
        #expect(load(config(cluster: #""name": "c", "hosts": [{"address": "svc.test:80"}]"#)).diagnostics.errors
                == ["\(at).hosts[0].address: invalid address \"svc.test:80\" (expected ip:port, port 0-65535)"])
    }
}
