import CTernShim
import Glibc

/// tcp_proxy's splice(2) path: per direction a pipe, and the bytes go socket → pipe → other
/// socket inside the kernel. The two connections report readiness only (`ownerMovesBytes`); the
/// rules are the copy path's: a side is not read while its pipe to the other side holds bytes
/// (back-pressure is at most one pipe, 64 KiB, per direction), a FIN is passed on once the pipe
/// has drained, a read or write error closes that connection with the error (the session turns
/// it into a reset of the other side).
final class SplicedPair {
    /// One direction: `source` → pipe → `destination`.
    final class Lane {
        unowned let source: Connection
        unowned let destination: Connection
        let pipeRead: Int32, pipeWrite: Int32
        var inPipe = 0
        /// Edge-triggered: true until a read finds the socket empty.
        var sourceReady = true
        var sourceEnded = false
        var finPassed = false
        /// The last splice into `destination` would have blocked: wait for its writable edge.
        var destinationBlocked = false
        var moved = 0

        init(source: Connection, destination: Connection, pipeRead: Int32, pipeWrite: Int32) {
            self.source = source; self.destination = destination
            self.pipeRead = pipeRead; self.pipeWrite = pipeWrite
        }
    }

    /// The kernel's default pipe size; one splice reads at most this (the copy path reads 64 KiB
    /// batches too).
    static let pipeBytes = 64 * 1024

    let fromClient: Lane, toClient: Lane
    private var closed = false

    /// nil when the pipes cannot be made (descriptor limit): the caller copies instead.
    init?(client: Connection, upstream: Connection) {
        var r1: Int32 = -1, w1: Int32 = -1, r2: Int32 = -1, w2: Int32 = -1
        guard tern_pipe_nonblock(&r1, &w1) == 0 else { return nil }
        guard tern_pipe_nonblock(&r2, &w2) == 0 else { Glibc.close(r1); Glibc.close(w1); return nil }
        fromClient = Lane(source: client, destination: upstream, pipeRead: r1, pipeWrite: w1)
        toClient = Lane(source: upstream, destination: client, pipeRead: r2, pipeWrite: w2)
    }

    /// Takes over both connections, at the start or midway (neither side has ended). Bytes a
    /// connection already read (an Auto fallback's, or a copy's still queued) are written first;
    /// spliced bytes follow once they are out.
    func start() {
        fromClient.source.forwardInput(to: fromClient.destination)
        toClient.source.forwardInput(to: toClient.destination)
        fromClient.source.ownerMovesBytes = true
        toClient.source.ownerMovesBytes = true
        run(fromClient)
        run(toClient)
    }

    func socketReady(_ connection: Connection, readable: Bool, writable: Bool) {
        let out = connection === fromClient.source ? fromClient : toClient
        let into = out === fromClient ? toClient : fromClient
        if readable { out.sourceReady = true }
        if writable { into.destinationBlocked = false }
        run(out)
        run(into)
    }

    /// Moves what can move now in one direction; stops when both ends would block.
    private func run(_ lane: Lane) {
        while !closed {
            var progressed = false
            if lane.inPipe > 0 && !lane.destinationBlocked && lane.destination.pendingOutput == 0 {
                let n = tern_splice(lane.pipeRead, lane.destination.fd, lane.inPipe)
                if n > 0 {
                    lane.inPipe -= n
                    lane.destination.noteProgress()
                    progressed = true
                } else {
                    let e = errno
                    if e == EAGAIN { lane.destinationBlocked = true }
                    else if e != EINTR { lane.destination.close(reason: .writeError(e)); return }
                }
            }
            // Read only into an empty pipe: then EAGAIN can only mean the socket is drained.
            if lane.inPipe == 0 && lane.sourceReady && !lane.sourceEnded {
                let n = tern_splice(lane.source.fd, lane.pipeWrite, SplicedPair.pipeBytes)
                if n > 0 {
                    lane.inPipe = n
                    lane.moved += n
                    lane.source.noteProgress()
                    progressed = true
                } else if n == 0 {
                    lane.sourceEnded = true
                } else {
                    let e = errno
                    if e == EAGAIN { lane.sourceReady = false }
                    else if e == EINTR { progressed = true }
                    else { lane.source.close(reason: .readError(e)); return }
                }
            }
            if !progressed { break }
        }
        guard !closed, lane.sourceEnded, lane.inPipe == 0, !lane.finPassed else { return }
        lane.finPassed = true
        lane.destination.shutdownWriteWhenFlushed()
        let other = lane === fromClient ? toClient : fromClient
        if other.finPassed {
            // Both directions ended: each side closes once its queued bytes and FIN are out.
            lane.source.closeWhenFlushed()
            lane.destination.closeWhenFlushed()
        }
    }

    /// Closes the pipes (the session ends; the connections close themselves).
    func close() {
        guard !closed else { return }
        closed = true
        for lane in [fromClient, toClient] { Glibc.close(lane.pipeRead); Glibc.close(lane.pipeWrite) }
    }
}
