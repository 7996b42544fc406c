import Foundation
import Testing
import TernTestSupport

/// Tern in front of a server, by tcp_proxy.
func ternInFront(of upstream: UInt16) throws -> (TernProcess, UInt16) {
    let listen = freePort()
    let config = l4Config(listen: listen, filters: tcpProxyFilter(cluster: "server"), clusters: clusterJSON("server", ports: [upstream]))
    return (try TernProcess(config: config, waitFor: [listen]), listen)
}

/// Real protocol clients through Tern's tcp_proxy to real servers: redis (pipelined), PostgreSQL
/// (psql, pgbench) and MQTT (mosquitto). Each answer is checked against the server's own, or
/// against what the server counted.
@Suite(.timeLimit(.minutes(2)), .tags(.l4))
struct L4ProxyTests {
    @Test func redisCommandsAnswerAsDirect() throws {
        let redis = try RedisServer()
        defer { redis.stop() }
        let (tern, port) = try ternInFront(of: redis.port)
        defer { tern.stop() }
        let commands: [[String]] = [["SET", "greeting", "hello"], ["GET", "greeting"], ["INCR", "counter"], ["INCRBY", "counter", "41"],
                                    ["RPUSH", "list", "a", "b", "c"], ["LRANGE", "list", "0", "-1"], ["GET", "missing"], ["DEL", "greeting"],
                                    ["NOSUCHCOMMAND"]]
        func answers(_ target: UInt16?) throws -> [String] { try commands.map { try redis.cli($0, port: target).1 } }
        let proxied = try answers(port)
        #expect(Array(proxied.prefix(7)) == ["OK\n", "hello\n", "1\n", "42\n", "3\n", "a\nb\nc\n", "\n"], "\(proxied)\n\(tern.child.output.suffix(2000))")
        #expect(try redis.cli(["FLUSHALL"]).1 == "OK\n")
        #expect(try answers(nil) == proxied)
    }

    @Test func redisLargeValueRoundTripsIntact() throws {
        let redis = try RedisServer()
        defer { redis.stop() }
        let (tern, port) = try ternInFront(of: redis.port)
        defer { tern.stop() }
        // 4 MiB of letters and digits (redis-cli prints a value raw, then a newline).
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)
        let value = (0..<(4 << 20)).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
        let file = NSTemporaryDirectory() + "tern-redis-value-\(UUID().uuidString)"
        try Data(value).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        #expect(try redis.cli(["-x", "SET", "big"], port: port, standardInput: file).1 == "OK\n")
        #expect(try redis.cli(["STRLEN", "big"]).1 == "\(value.count)\n")
        let proxied = Array(try redis.cli(["GET", "big"], port: port).1.utf8)
        let direct = Array(try redis.cli(["GET", "big"]).1.utf8)
        #expect(proxied.count == value.count + 1)
        // Checksums first so a mismatch reports two numbers, not two 4 MiB arrays.
        #expect(BoltTestFrame.crc32(Array(proxied.dropLast())) == BoltTestFrame.crc32(value))
        #expect(proxied == direct)
    }

    @Test func redisPipelinedBenchmarkHasNoErrorsAndReachesTheServer() throws {
        let redis = try RedisServer()
        defer { redis.stop() }
        let (tern, port) = try ternInFront(of: redis.port)
        defer { tern.stop() }
        let (status, output) = try redis.benchmark(["-P", "16", "-n", "20000", "-t", "set,get,incr,lpush", "-q"], port: port)
        #expect(status == 0, "\(output)\n\(tern.child.output.suffix(2000))")
        for test in ["SET", "GET", "INCR", "LPUSH"] { #expect(output.contains("\(test): "), "\(output)") }
        #expect(!output.lowercased().contains("error"), "\(output)")
        // Every request arrived: the server counted 20000 of each command.
        let stats = try redis.cli(["INFO", "commandstats"]).1
        for command in ["set", "get", "incr", "lpush"] {
            let calls = stats.split(separator: "\r\n").flatMap { $0.split(separator: "\n") }
                .first { $0.hasPrefix("cmdstat_\(command):calls=") }
                .flatMap { Int($0.dropFirst("cmdstat_\(command):calls=".count).prefix { $0.isNumber }) }
            #expect(calls == 20000, "\(command): \(stats)")
        }
        // The counter the INCR test raised: every one of them was applied.
        #expect(try redis.cli(["GET", "counter:__rand_int__"]).1 == "20000\n")
    }

    @Test func psqlThroughTernSeesWhatADirectConnectionSees() throws {
        let pg = try PostgresServer.shared()
        let (tern, port) = try ternInFront(of: pg.port)
        defer { tern.stop() }
        let db = try pg.createDatabase("l4_psql")
        let (status, output) = try pg.psql(["CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, body text)",
                                            "INSERT INTO items SELECT i, 'item-' || i, repeat(md5(i::text), 20) FROM generate_series(1, 2000) AS i",
                                            "UPDATE items SET name = name || '!' WHERE id % 7 = 0"], port: port, database: db)
        #expect(status == 0, "\(output)\n\(tern.child.output.suffix(2000))")
        let queries = ["SELECT count(*), sum(id), md5(string_agg(name || body, ',' ORDER BY id)) FROM items",
                       "SELECT id, name FROM items WHERE id IN (1, 7, 2000) ORDER BY id",
                       "SELECT * FROM items ORDER BY id"]
        let proxied = try pg.psql(queries, port: port, database: db)
        let direct = try pg.psql(queries, database: db)
        #expect(proxied.0 == 0, "\(proxied.1.prefix(2000))")
        #expect(proxied.1.hasPrefix("2000|2001000|"), "\(proxied.1.prefix(200))")
        #expect(proxied.1.contains("\n1|item-1\n7|item-7!\n2000|item-2000\n"))
        #expect(proxied.1.count > 1_000_000 && proxied.1 == direct.1, "\(proxied.1.count) vs \(direct.1.count) characters")
    }

    @Test func pgbenchThroughTernCompletesEveryTransaction() throws {
        let pg = try PostgresServer.shared()
        let (tern, port) = try ternInFront(of: pg.port)
        defer { tern.stop() }
        let db = try pg.createDatabase("l4_pgbench")
        let (initStatus, initOutput) = try pg.pgbench(["-i", "-q"], port: port, database: db)
        #expect(initStatus == 0, "\(initOutput)\n\(tern.child.output.suffix(2000))")
        #expect(try pg.psql(["SELECT count(*) FROM pgbench_accounts"], database: db).1 == "100000\n")
        let (status, output) = try pg.pgbench(["-c", "4", "-t", "200"], port: port, database: db)
        #expect(status == 0, "\(output)\n\(tern.child.output.suffix(2000))")
        let counts = PostgresServer.transactionsProcessed(output)
        #expect(counts?.processed == 800 && counts?.planned == 800, "\(output)")
        // Each transaction left its row in pgbench_history.
        #expect(try pg.psql(["SELECT count(*) FROM pgbench_history"], database: db).1 == "800\n")
    }

    @Test func mqttMessagesArriveInOrderThroughTernBothWays() throws {
        let broker = try MosquittoBroker()
        defer { broker.stop() }
        let (tern, port) = try ternInFront(of: broker.port)
        defer { tern.stop() }
        let payloads = (1...200).map { "message-\($0)-" + String(repeating: "x", count: $0) }
        let subscriber = try MQTTSubscriber(port: port, topic: "tern/l4", count: payloads.count, qos: 1)
        defer { subscriber.stop() }
        let (status, output) = try mqttPublish(port: port, topic: "tern/l4", payloads: payloads, qos: 1)
        #expect(status == 0, "\(output)\n\(tern.child.output.suffix(2000))")
        let received = subscriber.messages(timeout: 30)
        #expect(received?.status == 0, "\(subscriber.output.suffix(2000))")
        #expect(received?.payloads.count == payloads.count)
        #expect(received?.payloads == payloads)
    }
}
