import Glibc
import Testing
@testable import TernCore

/// Records the events a handler receives; on its first event it closes the other pair's socket
/// and registers `replacement` on a fresh socket, which takes the lowest free descriptor: the one
/// just closed, whose event may already sit later in the same epoll batch.
private final class Recorder: EventHandler {
    var events: [UInt32] = []
    var onFirstEvent: (() -> Void)?
    func handleEvents(_ events: UInt32) {
        self.events.append(events)
        if let f = onFirstEvent { onFirstEvent = nil; f() }
    }
}

@Suite struct EventLoopGenerationTests {
    @Test func aDescriptorReusedWithinOneBatchGetsNoStaleEvent() {
        let loop = EventLoop()
        let (a, aPeer) = socketPair()
        let (b, bPeer) = socketPair()
        let first = Recorder(), second = Recorder(), replacement = Recorder()
        var reused: Int32 = -1
        var replacementPeer: Int32 = -1
        // Whichever of a and b is handled first closes the other and reuses its descriptor.
        func reuse(_ victim: Int32) {
            loop.unregister(fd: victim)
            close(victim)
            let (x, y) = socketPair()
            if x == victim { reused = x; replacementPeer = y } else { reused = y; replacementPeer = x }
            loop.register(fd: reused, handler: replacement, events: Readiness.readable | Readiness.edgeTriggered)
        }
        first.onFirstEvent = { second.onFirstEvent = nil; reuse(b) }
        second.onFirstEvent = { first.onFirstEvent = nil; reuse(a) }
        loop.register(fd: a, handler: first, events: Readiness.readable | Readiness.edgeTriggered)
        loop.register(fd: b, handler: second, events: Readiness.readable | Readiness.edgeTriggered)
        // Both readable before the loop looks: their events arrive in one batch.
        _ = write(aPeer, "x", 1)
        _ = write(bPeer, "y", 1)
        loop.runOnce(maxWaitMS: 1000)
        #expect(reused == a || reused == b)
        #expect(first.events.count + second.events.count == 1, "only the handler that ran first saw its event")
        #expect(replacement.events.isEmpty, "the new socket on the reused descriptor got the old socket's event")
        // The new registration still works: data on it is delivered.
        _ = write(replacementPeer, "z", 1)
        loop.runOnce(maxWaitMS: 1000)
        #expect(replacement.events.count == 1)
        for fd in [aPeer, bPeer, replacementPeer, reused, a == reused ? b : a] { close(fd) }
    }
}
