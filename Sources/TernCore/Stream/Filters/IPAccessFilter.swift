import Synchronization

/// MOSN's `ip_access`: the client address (the connection's peer, or an address a trusted header
/// carries) checked against allow and deny lists in order; the first list that contains it
/// decides, else `default_action`. Denied requests are answered 403 and never reach an upstream.
public final class IPAccessFilter: Sendable {
    public struct Rule: Sendable {
        public let deny: Bool
        public let ranges: AddressRangeSet
        public init(deny: Bool, ranges: [AddressRange]) { self.deny = deny; self.ranges = AddressRangeSet(ranges) }
    }

    public let rules: [Rule]
    /// Lowercased name of the header to read the address from; nil: the connection's peer.
    public let header: [UInt8]?
    public let defaultAllow: Bool
    public let denied = LocalAnswer(status: 403, body: "tern: access denied (ip_access)\n", code: "ip_access_denied")
    public var phase: FilterPhase { .beforeRoute }
    /// Unique per filter ever made (the per-connection verdict memo's key).
    let serial: UInt64
    private static let serials = Atomic<UInt64>(0)

    public init(rules: [Rule], header: String?, defaultAllow: Bool) {
        serial = Self.serials.wrappingAdd(1, ordering: .relaxed).newValue
        self.rules = rules
        self.header = header.flatMap { $0.isEmpty ? nil : Bytes.lowercased($0) }
        self.defaultAllow = defaultAllow
    }

    /// The address the lists are matched against. As in MOSN: a header that is absent or empty
    /// falls back to the connection's peer; one that holds no IP address matches no list.
    func clientAddress<R: StreamRequest>(_ request: R, _ input: FilterInput) -> IPAddressBits? {
        if let header {
            let value: (empty: Bool, address: IPAddressBits?)? = request.withHeader(lowercasedName: header) { p, n in
                (n == 0, n == 0 ? nil : IPAddressBits.parse(p, n))
            }
            if let value, !value.empty { return value.address }
        }
        return input.downstream.peerAddress
    }

    public func decide<R: StreamRequest>(_ request: R, _ input: FilterInput) -> FilterVerdict {
        if header == nil {
            // The peer address is the connection's: decided once per connection.
            let connection = input.downstream
            if let allowed = connection.rememberedAccess(filter: serial) { return allowed ? .proceed : .answer(denied) }
            let allowed = allows(connection.peerAddress)
            connection.rememberAccess(filter: serial, allowed: allowed)
            return allowed ? .proceed : .answer(denied)
        }
        return allows(clientAddress(request, input)) ? .proceed : .answer(denied)
    }

    func allows(_ address: IPAddressBits?) -> Bool {
        if let address {
            for i in rules.indices where rules[i].ranges.contains(address) { return !rules[i].deny }
        }
        return defaultAllow
    }
}
