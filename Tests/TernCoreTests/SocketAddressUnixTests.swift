import Glibc
import Testing
import TernCore

@Suite struct SocketAddressUnixTests {
    @Test func unixPathPrintsWithItsScheme() throws {
        let a = try SocketAddress.unix(path: "/tmp/tern.sock")
        #expect(a.isUnix && !a.isAbstractUnix)
        #expect(a.family == AF_UNIX)
        #expect(a.unixPath == "/tmp/tern.sock")
        #expect(a.description == "unix:/tmp/tern.sock")
        #expect(a == (try SocketAddress.unix(path: "/tmp/tern.sock")))
        #expect(a != (try SocketAddress.unix(path: "/tmp/other.sock")))
    }

    @Test func sockaddrHoldsThePathAndItsNUL() throws {
        let a = try SocketAddress.unix(path: "/tmp/x.sock")
        let (family, length, path) = a.withSockAddr { pointer, length in
            pointer.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { sun in
                let path = withUnsafeBytes(of: sun.pointee.sun_path) { Array($0.prefix(while: { $0 != 0 })) }
                return (Int32(sun.pointee.sun_family), Int(length), String(decoding: path, as: UTF8.self))
            }
        }
        #expect(family == AF_UNIX)
        #expect(path == "/tmp/x.sock")
        #expect(length == MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + "/tmp/x.sock".utf8.count + 1)
    }

    @Test func abstractNameStartsWithNULAndCountsOnlyItsBytes() throws {
        let a = try SocketAddress.unix(path: "@tern-test")
        #expect(a.isAbstractUnix)
        #expect(a.description == "unix:@tern-test")
        let (first, name, length) = a.withSockAddr { pointer, length in
            pointer.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { sun in
                withUnsafeBytes(of: sun.pointee.sun_path) { ($0[0], String(decoding: $0[1..<10], as: UTF8.self), Int(length)) }
            }
        }
        #expect(first == 0)
        #expect(name == "tern-test")
        #expect(length == MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + 1 + 9)
    }

    @Test func pathsThatDoNotFitSunPathAreRefused() throws {
        #expect(SocketAddress.maxUnixPathBytes == 107)
        let longest = "/" + String(repeating: "a", count: 106)
        #expect((try SocketAddress.unix(path: longest)).unixPath == longest)
        #expect(throws: SocketAddress.UnixPathProblem.tooLong(bytes: 108)) { try SocketAddress.unix(path: longest + "b") }
        #expect((try SocketAddress.unix(path: "@" + String(repeating: "n", count: 107))).isAbstractUnix)
        #expect(throws: SocketAddress.UnixPathProblem.tooLong(bytes: 108)) { try SocketAddress.unix(path: "@" + String(repeating: "n", count: 108)) }
        #expect(throws: SocketAddress.UnixPathProblem.empty) { try SocketAddress.unix(path: "") }
        #expect(throws: SocketAddress.UnixPathProblem.empty) { try SocketAddress.unix(path: "@") }
        #expect(throws: SocketAddress.UnixPathProblem.containsNUL) { try SocketAddress.unix(path: "/tmp/a\u{0}b") }
    }

    @Test func ipAddressesAreUnchanged() throws {
        let a = try #require(SocketAddress.parse("127.0.0.1:8080"))
        #expect(!a.isUnix && a.unixPath == nil && a.description == "127.0.0.1:8080")
        let b = try #require(SocketAddress.parse("[::1]:80"))
        #expect(!b.isUnix && b.family == AF_INET6)
        #expect(SocketAddress.parse("unix:/tmp/x") == nil)
    }
}
