/// Receives timer expirations. Owners keep one `LoopTimer` per purpose and re-arm it, so arming a
/// timeout per request allocates nothing.
public protocol TimerTarget: AnyObject {
    func timerFired(_ timer: LoopTimer)
}

public final class LoopTimer {
    public unowned(unsafe) let target: TimerTarget
    public let tag: Int
    fileprivate(set) public var deadline: Int64 = 0
    fileprivate var heapIndex = -1
    public var isArmed: Bool { heapIndex >= 0 }

    public init(target: TimerTarget, tag: Int = 0) {
        self.target = target
        self.tag = tag
    }
}

/// A binary min-heap of armed timers keyed by deadline; the loop sleeps until the earliest one.
public final class TimerHeap {
    private var heap: [LoopTimer] = []

    public init() {}

    public var count: Int { heap.count }

    public func arm(_ timer: LoopTimer, at deadline: Int64) {
        if timer.heapIndex >= 0 { remove(timer) }
        timer.deadline = deadline
        timer.heapIndex = heap.count
        heap.append(timer)
        siftUp(timer.heapIndex)
    }

    public func cancel(_ timer: LoopTimer) {
        if timer.heapIndex >= 0 { remove(timer) }
    }

    public func millisecondsUntilNext(now: Int64) -> Int32 {
        guard let first = heap.first else { return 1000 }
        let delta = first.deadline - now
        if delta <= 0 { return 0 }
        return Int32(min(delta, 1000))
    }

    public func fireDue(now: Int64) {
        while let first = heap.first, first.deadline <= now {
            remove(first)
            first.target.timerFired(first)
        }
    }

    private func remove(_ timer: LoopTimer) {
        let index = timer.heapIndex
        let last = heap.count - 1
        if index != last {
            heap.swapAt(index, last)
            heap[index].heapIndex = index
        }
        heap.removeLast()
        timer.heapIndex = -1
        if index < heap.count {
            siftDown(index)
            siftUp(index)
        }
    }

    private func siftUp(_ start: Int) {
        var child = start
        while child > 0 {
            let parent = (child - 1) / 2
            if heap[parent].deadline <= heap[child].deadline { break }
            heap.swapAt(parent, child)
            heap[parent].heapIndex = parent
            heap[child].heapIndex = child
            child = parent
        }
    }

    private func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = parent * 2 + 1
            if left >= heap.count { break }
            var smallest = left
            let right = left + 1
            if right < heap.count && heap[right].deadline < heap[left].deadline { smallest = right }
            if heap[parent].deadline <= heap[smallest].deadline { break }
            heap.swapAt(parent, smallest)
            heap[parent].heapIndex = parent
            heap[smallest].heapIndex = smallest
            parent = smallest
        }
    }
}
