import TernCore

/// MOSN's bolt health check (`health_check.protocol: bolt`): a heartbeat request; healthy when a
/// heartbeat response with SUCCESS comes back (MOSN's SofaRPC check does the same).
public struct BoltHealthProbe: HealthProbe {
    public let protocolCode: UInt8
    public init(protocolCode: UInt8 = 1) { self.protocolCode = protocolCode }

    public var name: String { "bolt heartbeat" }

    public func request(for host: HostConfig) -> [UInt8]? {
        let out = ByteBuffer(capacity: 64)
        BoltCodec.writeHeartbeat(out, protocolCode: protocolCode, requestID: 1)
        return Array(UnsafeBufferPointer(start: out.readPointer, count: out.readableBytes))
    }

    public func judge(_ p: UnsafePointer<UInt8>, _ count: Int) -> ProbeVerdict {
        switch BoltCodec.decode(p, count, maxFrame: 64 * 1024) {
        case .needMore: return .needMore
        case .error(let why): return .unhealthy(why)
        case .frame(let frame):
            guard frame.kind == .response, frame.command == .heartbeat else { return .unhealthy("not a heartbeat answer") }
            return frame.status == BoltStatus.success.rawValue ? .healthy : .unhealthy("heartbeat status \(frame.status)")
        }
    }
}
