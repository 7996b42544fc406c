import CTernShim
import Glibc

/// Something registered with an event loop for readiness of one file descriptor.
public protocol EventHandler: AnyObject {
    func handleEvents(_ events: UInt32)
}

/// Readiness bits as delivered by epoll.
public enum Readiness {
    public static let readable: UInt32 = 0x001
    public static let writable: UInt32 = 0x004
    public static let error: UInt32 = 0x008
    public static let hangup: UInt32 = 0x010
    public static let readHangup: UInt32 = 0x2000
    public static let edgeTriggered: UInt32 = 1 << 31
    /// Registered once per socket and never re-armed: edge-triggered read and write.
    public static let socketInterest = readable | writable | readHangup | edgeTriggered
}

/// One epoll loop owned by one thread. Every object that registers with it (connections, listeners,
/// timers, pools) is confined to that thread; the only way in from elsewhere is `execute`.
public final class EventLoop {
    private let epollFD: Int32
    /// Handlers by descriptor, each with the generation it was registered under. The generation
    /// travels in the epoll event data beside the descriptor, so an event read in the same batch
    /// as a close cannot reach a new socket that reused the descriptor number.
    private var registrations: [Registration] = []
    private var nextGeneration: UInt32 = 1
    private struct Registration {
        var handler: EventHandler?
        var generation: UInt32 = 0
    }
    public let timers = TimerHeap()
    private let tasks: TaskQueue
    private var events = [tern_event](repeating: tern_event(), count: 256)
    public private(set) var running = false
    /// Cached monotonic milliseconds, refreshed once per wake-up.
    public private(set) var nowMS: Int64 = tern_monotonic_ms()
    /// The same instant in microseconds (access logs' durations: nginx's cached-time habit, no
    /// clock read per request).
    public private(set) var nowUS: Int64 = monotonicMicroseconds()
    /// Connections with output queued during this batch of events: written once, after the batch,
    /// so many responses for one socket leave in one write.
    private var pendingFlush: [Connection] = []

    public init() {
        epollFD = tern_epoll_create()
        precondition(epollFD >= 0, "epoll_create1 failed: errno \(errno)")
        tasks = TaskQueue()
        register(fd: tasks.eventFD, handler: tasks, events: Readiness.readable)
    }

    deinit { close(epollFD) }

    /// A handle other threads may use to run work on this loop.
    public var remote: TaskQueue { tasks }

    public func register(fd: Int32, handler: EventHandler, events: UInt32 = Readiness.socketInterest) {
        let index = Int(fd)
        if index >= registrations.count {
            registrations.append(contentsOf: repeatElement(Registration(), count: index + 64 - registrations.count))
        }
        let generation = nextGeneration
        nextGeneration = nextGeneration == UInt32.max ? 1 : nextGeneration + 1
        registrations[index] = Registration(handler: handler, generation: generation)
        if tern_epoll_add(epollFD, fd, events, EventLoop.eventData(index, generation)) != 0 {
            registrations[index] = Registration()
        }
    }

    public func modify(fd: Int32, events: UInt32) {
        let index = Int(fd)
        guard index < registrations.count, registrations[index].handler != nil else { return }
        _ = tern_epoll_mod(epollFD, fd, events, EventLoop.eventData(index, registrations[index].generation))
    }

    public func unregister(fd: Int32) {
        let index = Int(fd)
        if index < registrations.count { registrations[index] = Registration() }
        _ = tern_epoll_del(epollFD, fd)
    }

    @inline(__always)
    static func eventData(_ index: Int, _ generation: UInt32) -> UInt64 { UInt64(generation) << 32 | UInt64(UInt32(index)) }

    public func updateClock() { readClock() }

    @inline(__always) private func readClock() {
        nowUS = monotonicMicroseconds()
        nowMS = nowUS / 1000
    }

    /// Runs until `stop()` is called from this loop's thread.
    public func run() {
        running = true
        while running { runOnce(maxWaitMS: timers.millisecondsUntilNext(now: nowMS)) }
    }

    /// One turn: waits for readiness (at most `maxWaitMS`), handles the batch, fires due timers,
    /// flushes the output queued during the batch. Public so tests can drive a loop step by step.
    public func runOnce(maxWaitMS: Int32) {
        let n = events.withUnsafeMutableBufferPointer { tern_epoll_wait(epollFD, $0.baseAddress, 256, maxWaitMS) }
        readClock()
        if n > 0 {
            for i in 0..<Int(n) {
                let data = events[i].data
                let index = Int(UInt32(truncatingIfNeeded: data))
                guard index < registrations.count else { continue }
                let registration = registrations[index]
                // A stale event: its descriptor was closed (and maybe reused) earlier in this batch.
                guard registration.generation == UInt32(truncatingIfNeeded: data >> 32), let handler = registration.handler else { continue }
                handler.handleEvents(events[i].events)
            }
        }
        timers.fireDue(now: nowMS)
        flushPending()
    }

    public func stop() { running = false }

    /// Queues `connection` to be flushed after the current batch of events.
    public func flushLater(_ connection: Connection) {
        if connection.flushScheduled { return }
        connection.flushScheduled = true
        pendingFlush.append(connection)
    }

    private func flushPending() {
        var i = 0
        while i < pendingFlush.count {   // a flush may queue more
            let c = pendingFlush[i]
            c.flushScheduled = false
            c.flush()
            i += 1
        }
        pendingFlush.removeAll(keepingCapacity: true)
    }
}
