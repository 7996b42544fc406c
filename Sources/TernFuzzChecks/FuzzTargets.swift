/// Every fuzz target: its name (also the name of its corpus and crashes folders under Fuzz/) and
/// its check. Adding a target is one check file in this module and one line here.
public let fuzzTargets: [(name: String, check: FuzzCheck)] = [
    ("http-request", HTTPHeadChecks.request),
    ("http-response", HTTPHeadChecks.response),
    ("chunked", ChunkedChecks.check),
    ("bolt", BoltChecks.check),
    ("config", ConfigChecks.check),
    ("regex", RegexChecks.check),
    ("sni", ServerNameChecks.check),
    ("client-hello", ClientHelloChecks.check),
    ("client-address", ClientAddressChecks.check),
    ("jwt-token", JWTTokenChecks.check),
    ("dns-answer", DNSAnswerChecks.check),
]

/// A check takes one input, runs the decoder on it every way that must agree (whole, split,
/// copied, re-decoded), and throws only when a rule is broken: a mismatch, an offset out of its
/// bounds, an impossible result. A crash inside the decoder is a failure too, found by the trap.
public typealias FuzzCheck = @Sendable (UnsafeRawBufferPointer) throws -> Void

public struct FuzzCheckFailure: Error, CustomStringConvertible {
    public let description: String
}

@inline(__always)
func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw FuzzCheckFailure(description: message()) }
}

/// Inputs of the protocol targets start with four control bytes that steer the check (where to
/// split, which limits), so the fuzzer explores them like any other byte; the rest is the payload.
/// A shorter input reads as zeros for the missing control bytes and an empty payload.
struct ControlledInput {
    let control: (UInt8, UInt8, UInt8, UInt8)
    let payload: [UInt8]

    init(_ data: UnsafeRawBufferPointer) {
        func at(_ i: Int) -> UInt8 { i < data.count ? data[i] : 0 }
        control = (at(0), at(1), at(2), at(3))
        payload = data.count > 4 ? Array(data[4...]) : []
    }

    /// A cut point in `0...count` chosen by one control byte.
    static func cut(_ byte: UInt8, _ count: Int) -> Int { count * Int(byte) / 255 }
}

extension Array where Element == UInt8 {
    /// Runs `body` over the bytes with a non-nil base address even when empty (the decoders take
    /// an `UnsafePointer`).
    func withBytes<R>(_ body: (UnsafePointer<UInt8>, Int) throws -> R) rethrows -> R {
        if isEmpty {
            var none: UInt8 = 0
            return try withUnsafePointer(to: &none) { try body($0, 0) }
        }
        return try withUnsafeBufferPointer { try body($0.baseAddress!, $0.count) }
    }
}
