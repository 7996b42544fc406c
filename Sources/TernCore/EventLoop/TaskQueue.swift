import CTernShim
import Glibc
import Synchronization

/// The one way into an event loop from another thread: closures queued under a mutex and an eventfd
/// that wakes the loop. Used for control work (drain, stop), never per request.
public final class TaskQueue: EventHandler, Sendable {
    let eventFD: Int32
    private let pending = Mutex<[@Sendable () -> Void]>([])

    init() {
        eventFD = tern_eventfd()
        precondition(eventFD >= 0, "eventfd failed")
    }

    public func execute(_ task: @escaping @Sendable () -> Void) {
        pending.withLock { $0.append(task) }
        _ = tern_eventfd_signal(eventFD)
    }

    public func handleEvents(_ events: UInt32) {
        _ = tern_eventfd_drain(eventFD)
        let tasks = pending.withLock { queued -> [@Sendable () -> Void] in
            let taken = queued
            queued.removeAll()
            return taken
        }
        for task in tasks { task() }
    }
}
