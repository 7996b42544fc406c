import TernCore
import TernHTTP1

/// A network filter compiled from config; makes one filter instance per worker and listener.
public protocol NetworkFilterPlan: Sendable {
    func makeFilter(worker: Worker) -> NetworkFilter
}

/// How a network filter type reads its config.
protocol NetworkFilterKind: Sendable {
    func compile(_ config: JSONObject, context: FilterContext, diagnostics: Diagnostics) -> NetworkFilterPlan?
}

/// Network filters by `type`: a new filter is one folder plus one line here.
enum NetworkFilterRegistry {
    static let kinds: [String: NetworkFilterKind] = [
        "proxy": ProxyFilterKind(),
    ]
}

/// Stream protocols by MOSN's names: a new codec is one module plus one line here.
enum ProtocolRegistry {
    static let protocols: [String: StreamProtocol] = [
        "Http1": HTTP1Protocol(),
    ]
    /// The order `Auto` tries them in.
    static let sniffOrder = ["Http1"]
    /// Names MOSN knows that Tern does not serve yet.
    static let later: Set<String> = ["Http2", "bolt", "boltv2", "dubbo", "tars", "X"]
}
