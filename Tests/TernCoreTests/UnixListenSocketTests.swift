import Foundation
import Glibc
import Testing
import TernCore
import TernTestSupport

@Suite struct UnixListenSocketTests {
    @Test func releaseRemovesOnlyTheFileItBound() throws {
        let dir = try UnixTempDirectory()
        defer { dir.remove() }
        let path = dir.file("l.sock")
        let address = try SocketAddress.unix(path: path)
        let first = try UnixListenSocket.open(address)
        #expect(!first.replacedStaleFile && isSocketFile(path) && canConnect(unixPath: path))
        first.release()
        #expect(!FileManager.default.fileExists(atPath: path))
        first.release()   // a second release is a no-op

        // Another process removed the file and bound its own at the path: releasing ours must
        // leave theirs alone.
        let second = try UnixListenSocket.open(address)
        unlink(path)
        try makeStaleSocketFile(path)
        second.release()
        #expect(isSocketFile(path))
    }

    @Test func staleFilesAreReplacedLiveOnesAndOtherFilesRefused() throws {
        let dir = try UnixTempDirectory()
        defer { dir.remove() }
        let path = dir.file("s.sock")
        let address = try SocketAddress.unix(path: path)
        try makeStaleSocketFile(path)
        let live = try UnixListenSocket.open(address)
        defer { live.release() }
        #expect(live.replacedStaleFile)
        do { _ = try UnixListenSocket.open(address); Issue.record("a live socket was taken") } catch {
            #expect(error.description == "unix:\(path) is in use by another process (it accepts connections); not removed")
        }
        #expect(canConnect(unixPath: path))

        let plain = dir.file("plain")
        try "keep".write(toFile: plain, atomically: false, encoding: .utf8)
        let plainAddress = try SocketAddress.unix(path: plain)
        do { _ = try UnixListenSocket.open(plainAddress); Issue.record("a plain file was taken") } catch {
            #expect(error.description == "\(plain) exists and is not a socket; not removed")
        }
        #expect(try String(contentsOfFile: plain, encoding: .utf8) == "keep")
    }
}
