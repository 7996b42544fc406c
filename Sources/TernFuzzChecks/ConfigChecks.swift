import TernCore
import TernServer

/// What `tern validate` runs on a file's bytes: the JSON parser, then the MOSN config reader and
/// compiler. The whole input is the file (no control bytes).
///
/// Rules: any bytes end in a plan or in errors, never a crash; a plan comes exactly when there is
/// no error; every error names a JSON path; a config the reader accepts parses as JSON.
enum ConfigChecks {
    static func check(_ data: UnsafeRawBufferPointer) throws {
        let text = String(decoding: data, as: UTF8.self)   // as readFile does
        let parsed = (try? JSONParser.parse(text)) != nil
        let result = ConfigLoader.load(text: text)
        try require((result.plan != nil) == result.diagnostics.errors.isEmpty,
                    "plan \(result.plan != nil) with \(result.diagnostics.errors.count) errors")
        try require(result.plan == nil || parsed, "a plan from text the JSON parser refuses")
        for message in result.diagnostics.errors + result.diagnostics.warnings {
            try require(message.hasPrefix("$"), "diagnostic without a JSON path: \(message)")
        }
    }
}
