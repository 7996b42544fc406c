import Foundation
import Testing
import TernTestSupport

/// The real servers the L4 proxy tests use, each checked on its own (no proxy), so a failure
/// through Tern never hides a broken peer.
@Suite(.timeLimit(.minutes(2)), .tags(.l4))
struct RealServerTests {
    @Test func redisAnswersItsCLI() throws {
        let redis = try RedisServer()
        defer { redis.stop() }
        #expect(try redis.cli(["PING"]).1 == "PONG\n")
        #expect(try redis.cli(["SET", "k", "v"]).1 == "OK\n")
        #expect(try redis.cli(["GET", "k"]).1 == "v\n")
        let (status, output) = try redis.benchmark(["-P", "16", "-n", "2000", "-t", "set,get", "-q"])
        #expect(status == 0 && output.contains("SET: ") && output.contains("GET: "), "\(output)")
    }

    @Test func postgresRunsSQLAsAnUnprivilegedUser() throws {
        let pg = try PostgresServer.shared()
        let db = try pg.createDatabase("direct")
        let (status, output) = try pg.psql(["CREATE TABLE t (id int PRIMARY KEY, name text)",
                                            "INSERT INTO t VALUES (1, 'one'), (2, 'two')",
                                            "SELECT id, name FROM t ORDER BY id",
                                            "SELECT current_user, usesuper FROM pg_user WHERE usename = current_user"], database: db)
        #expect(status == 0, "\(output)")
        #expect(output == "1|one\n2|two\npostgres|t\n")
        // The server process does not run as root.
        let owner = try String(contentsOfFile: "/proc/\(pg.child.pid)/status", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("Uid:") }
        #expect(owner.map { !$0.split(separator: "\t").dropFirst().contains("0") } == true, "\(String(describing: owner))")
    }

    @Test func pgbenchRunsItsTransactions() throws {
        let pg = try PostgresServer.shared()
        let db = try pg.createDatabase("bench")
        let (initStatus, initOutput) = try pg.pgbench(["-i", "-q"], database: db)
        #expect(initStatus == 0, "\(initOutput)")
        let (status, output) = try pg.pgbench(["-c", "2", "-t", "20"], database: db)
        #expect(status == 0, "\(output)")
        let counts = PostgresServer.transactionsProcessed(output)
        #expect(counts?.processed == 40 && counts?.planned == 40, "\(output)")
    }

    @Test func mosquittoDeliversPublishedMessagesInOrder() throws {
        let broker = try MosquittoBroker()
        defer { broker.stop() }
        let payloads = (1...20).map { "direct-\($0)" }
        let subscriber = try MQTTSubscriber(port: broker.port, topic: "tern/direct", count: payloads.count)
        defer { subscriber.stop() }
        let (status, output) = try mqttPublish(port: broker.port, topic: "tern/direct", payloads: payloads)
        #expect(status == 0, "\(output)")
        let received = subscriber.messages(timeout: 20)
        #expect(received?.status == 0, "\(subscriber.output.suffix(2000))")
        #expect(received?.payloads == payloads)
    }
}
