import Glibc

/// A growable byte buffer with separate read and write positions. Storage is raw memory so parsers
/// can scan it in place; buffers are recycled through `BufferPool` instead of being freed.
/// (One of the few files with pointer code: all raw access to buffer memory lives here.)
public final class ByteBuffer {
    public private(set) var base: UnsafeMutablePointer<UInt8>
    public private(set) var capacity: Int
    public var readerIndex = 0
    public var writerIndex = 0

    public init(capacity: Int = 16384) {
        self.capacity = max(capacity, 64)
        base = UnsafeMutablePointer<UInt8>.allocate(capacity: self.capacity)
    }

    deinit { base.deallocate() }

    @inline(__always) public var readableBytes: Int { writerIndex - readerIndex }
    @inline(__always) public var isEmpty: Bool { writerIndex == readerIndex }
    @inline(__always) public var readPointer: UnsafeMutablePointer<UInt8> { base + readerIndex }
    @inline(__always) public var writePointer: UnsafeMutablePointer<UInt8> { base + writerIndex }
    @inline(__always) public var writableBytes: Int { capacity - writerIndex }

    @inline(__always) public func byte(at offset: Int) -> UInt8 { base[readerIndex + offset] }

    public func clear() { readerIndex = 0; writerIndex = 0 }

    /// Makes room for `count` more bytes, first by moving unread bytes to the front, then by growing.
    public func reserve(_ count: Int) {
        if writableBytes >= count { return }
        if readerIndex > 0 {
            let unread = readableBytes
            if unread > 0 { memmove(base, base + readerIndex, unread) }
            readerIndex = 0
            writerIndex = unread
            if writableBytes >= count { return }
        }
        var newCapacity = capacity * 2
        while newCapacity - writerIndex < count { newCapacity *= 2 }
        let grown = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
        grown.update(from: base, count: writerIndex)
        base.deallocate()
        base = grown
        capacity = newCapacity
    }

    public func consume(_ count: Int) {
        readerIndex += count
        if readerIndex == writerIndex { readerIndex = 0; writerIndex = 0 }
    }

    public func write(_ pointer: UnsafeRawPointer, count: Int) {
        if count == 0 { return }
        if capacity &- writerIndex < count { reserve(count) }
        (base + writerIndex).update(from: pointer.assumingMemoryBound(to: UInt8.self), count: count)
        writerIndex += count
    }

    public func write<S: Sequence>(bytes: S) where S.Element == UInt8 {
        for b in bytes { writeByte(b) }
    }

    public func write(_ array: [UInt8]) {
        array.withUnsafeBytes { if let p = $0.baseAddress { write(p, count: $0.count) } }
    }

    public func write(_ string: StaticString) {
        write(string.utf8Start, count: string.utf8CodeUnitCount)
    }

    public func write(string: String) {
        var s = string
        s.withUTF8 { if let p = $0.baseAddress { write(p, count: $0.count) } }
    }

    @inline(__always) public func writeByte(_ b: UInt8) {
        if writerIndex == capacity { reserve(1) }
        base[writerIndex] = b
        writerIndex += 1
    }

    /// `value` in decimal, digits written in place from the last (no scratch, no closure: it runs
    /// for every Content-Length Tern writes and every number of an access-log line).
    public func writeDecimal(_ value: Int) {
        guard value >= 0 else {
            writeByte(UInt8(ascii: "-"))
            writeDecimal(value == Int.min ? Int.max : -value)   // Int.min: never a length or a count
            return
        }
        if value < 100 {
            // Status codes, small lengths, counts: one or two digits without a loop.
            if capacity &- writerIndex < 2 { reserve(2) }
            if value >= 10 { base[writerIndex] = UInt8(truncatingIfNeeded: value / 10) &+ 48; writerIndex &+= 1 }
            base[writerIndex] = UInt8(truncatingIfNeeded: value % 10) &+ 48
            writerIndex &+= 1
            return
        }
        var digits = 3, rest = value / 1000
        while rest > 0 { digits &+= 1; rest /= 10 }
        if capacity &- writerIndex < digits { reserve(digits) }
        var v = value, at = writerIndex &+ digits
        repeat {
            at &-= 1
            base[at] = UInt8(truncatingIfNeeded: v % 10) &+ 48
            v /= 10
        } while v > 0
        writerIndex &+= digits
    }

    public func writeHex(_ value: Int) {
        let hex: StaticString = "0123456789abcdef"
        var shift = 60
        while shift > 0 && (value >> shift) & 0xF == 0 { shift -= 4 }
        while shift >= 0 {
            writeByte(hex.utf8Start[(value >> shift) & 0xF])
            shift -= 4
        }
    }

    /// Copies `count` readable bytes of `other` starting at `offset` past its reader index.
    public func write(from other: ByteBuffer, offset: Int, count: Int) {
        write(other.base + other.readerIndex + offset, count: count)
    }

    /// A copy of readable bytes, for tests and diagnostics.
    public func readableArray() -> [UInt8] { Array(UnsafeBufferPointer(start: readPointer, count: readableBytes)) }

    /// Shrinks an oversized buffer back to `size` when it holds nothing.
    public func shrinkIfEmpty(to size: Int) {
        guard isEmpty, capacity > size else { return }
        base.deallocate()
        base = UnsafeMutablePointer<UInt8>.allocate(capacity: size)
        capacity = size
    }
}

/// Per-worker free list of buffers, so idle connections hold no buffer memory (HAProxy's habit) and
/// busy ones do not hit malloc per read.
public final class BufferPool {
    public let bufferSize: Int
    private var free: [ByteBuffer] = []
    private let maxFree: Int

    public init(bufferSize: Int = 16384, maxFree: Int = 64) {
        self.bufferSize = bufferSize
        self.maxFree = maxFree
    }

    public func take() -> ByteBuffer {
        if let b = free.popLast() { return b }
        return ByteBuffer(capacity: bufferSize)
    }

    public func give(_ buffer: ByteBuffer) {
        buffer.clear()
        guard free.count < maxFree else { return }
        // Buffers that grew for a read batch (up to 64 KiB) are kept as they are: shrinking and
        // regrowing them would cost a malloc/free per large message.
        buffer.shrinkIfEmpty(to: max(bufferSize, 64 * 1024))
        free.append(buffer)
    }
}
