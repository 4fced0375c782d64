import Foundation
@testable import QConvKit
import QConvTestSupport
import XCTest

/// rank_pattern / alpha_pattern keys matched as PEFT matches them
/// (`re.match(rf"(.*\.)?({key})$", name)`, checked against Python's answers),
/// in time linear in the name and the pattern, with the config bounded.
final class LoRAPatternTests: XCTestCase {
    /// A config with `rank_pattern` holding `keys` (ranks 1, 2, ...) and r = 99.
    private func config(rankKeys keys: [String], alphaKeys: [String] = []) throws -> LoRAAdapterConfig {
        let object: [String: Any] = [
            "peft_type": "LORA", "r": 99, "lora_alpha": 7,
            "rank_pattern": Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($0.element, $0.offset + 1) }),
            "alpha_pattern": Dictionary(uniqueKeysWithValues: alphaKeys.map { ($0, 1.5) }),
        ]
        return try LoRAAdapterConfig(json: [UInt8](try JSONSerialization.data(withJSONObject: object)), file: "adapter_config.json")
    }

    /// Config JSON text with the rank_pattern members in this order (JSONSerialization does not keep order).
    private func orderedConfig(_ members: [(String, Int)]) throws -> LoRAAdapterConfig {
        let body = try members.map { key, rank in
            String(decoding: try JSONSerialization.data(withJSONObject: key, options: .fragmentsAllowed), as: UTF8.self) + ": \(rank)"
        }.joined(separator: ", ")
        return try LoRAAdapterConfig(json: Array("{\"peft_type\": \"LORA\", \"r\": 99, \"rank_pattern\": {\(body)}}".utf8), file: "adapter_config.json")
    }

    private struct PythonCase: Decodable {
        let key: String
        let python: String
        let reason: String?
        let matches: [String]?
        let misses: [String]?
    }

    /// Every key of make_cases.py: Python's verdict (error, or which names match) is qconv's.
    func testMatchesAsPythonDoes() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("lora/patterns/python_re_cases.json")))
        let cases = try JSONDecoder().decode([PythonCase].self, from: data)
        XCTAssertGreaterThan(cases.count, 500)
        var checked = 0
        for test in cases {
            let built = Result { try config(rankKeys: [test.key]) }
            switch (test.python, built) {
            case ("error", .failure(let error)):
                guard case .invalidPattern(_, "rank_pattern", test.key, _)? = error as? LoRAMergeError else { XCTFail("\(test.key): \(error)"); continue }
            case ("unsupported", .failure(let error)):
                guard case .unsupportedPattern(_, "rank_pattern", test.key, _)? = error as? LoRAMergeError else { XCTFail("\(test.key): \(error)"); continue }
            case ("ok", .success(let parsed)):
                for name in test.matches ?? [] { XCTAssertEqual(try parsed.rank(forModule: name), 1, "\(test.key) must match \(name.debugDescription)") }
                for name in test.misses ?? [] { XCTAssertEqual(try parsed.rank(forModule: name), 99, "\(test.key) must not match \(name.debugDescription)") }
                checked += (test.matches?.count ?? 0) + (test.misses?.count ?? 0)
            default:
                XCTFail("\(test.key.debugDescription): Python says \(test.python) \(test.reason ?? ""), qconv \(built)")
            }
        }
        XCTAssertGreaterThan(checked, 9_000)
    }

    /// The first key in the map's order wins, whether it is a plain name (indexed) or a regular expression.
    func testFirstKeyInOrderWinsAcrossKindsOfKeys() throws {
        let name = "model.layers.3.self_attn.q_proj"
        XCTAssertEqual(try orderedConfig([("layers.3.self_attn.q_proj", 1), ("q_proj", 2), (#"layers\.\d\..*"#, 3)]).rank(forModule: name), 1)
        XCTAssertEqual(try orderedConfig([(#"layers\.\d\..*"#, 3), ("layers.3.self_attn.q_proj", 1), ("q_proj", 2)]).rank(forModule: name), 3)
        XCTAssertEqual(try orderedConfig([("x_proj", 5), ("q_proj", 2), ("layers.3.self_attn.q_proj", 1)]).rank(forModule: name), 2)
        XCTAssertEqual(try orderedConfig([("k_proj", 5), ("layers.3", 6)]).rank(forModule: name), 99)
        // Keys that are the same plain name written differently: the first one wins.
        XCTAssertEqual(try orderedConfig([(#"self_attn\.q_proj"#, 4), ("self_attn[.]q_proj", 5)]).rank(forModule: name), 4)
        XCTAssertEqual(try orderedConfig([("self_attn.q_proj", 4), (#"self_attn\.q_proj"#, 5)]).rank(forModule: "model.self_attnXq_proj"), 4)
        XCTAssertEqual(try orderedConfig([(#"self_attn\.q_proj"#, 5), ("self_attn.q_proj", 4)]).rank(forModule: "model.self_attnXq_proj"), 4)
    }

    /// Code points are compared, as in Python: "é" precomposed is not "e" + a combining accent.
    func testNamesAreComparedByCodePoint() throws {
        let parsed = try config(rankKeys: ["caf\u{E9}"])
        XCTAssertEqual(try parsed.rank(forModule: "x.caf\u{E9}"), 1)
        XCTAssertEqual(try parsed.rank(forModule: "x.cafe\u{301}"), 99)
    }

    /// The key of finding 1 backtracks for minutes in a backtracking matcher; here it is linear.
    func testCatastrophicBacktrackingKeyIsLinear() throws {
        let started = Date()
        let parsed = try config(rankKeys: ["((((((((((.*)*)*)*)*)*)*)*)*)*)*x$", "(x+x+)+y", "(a|aa)*b"])
        let long = String(repeating: "x", count: 5000)
        XCTAssertEqual(try parsed.rank(forModule: "model.layers.0." + long), 1)
        XCTAssertEqual(try parsed.rank(forModule: "model.layers.0." + long + "z"), 99)
        XCTAssertEqual(try parsed.rank(forModule: long + "y"), 2)
        XCTAssertEqual(try parsed.rank(forModule: String(repeating: "a", count: 5000)), 99)
        XCTAssertLessThan(Date().timeIntervalSince(started), 2)
    }

    func testUnsupportedConstructsAreRefusedNamingTheKey() {
        for key in [#"(a)\1"#, "(?=q)q_proj", "(?<!k)q_proj", "q_proj*+", "(?i:Q_PROJ)", "(?>a)", String(repeating: "(", count: 150) + "a" + String(repeating: ")", count: 150),
                    "a{1001}", "(a{1000}){1000}"] {
            XCTAssertThrowsError(try config(rankKeys: ["q_proj", key])) { error in
                guard case .unsupportedPattern(let file, "rank_pattern", key, _)? = error as? LoRAMergeError else { return XCTFail("\(key): \(error)") }
                XCTAssertEqual(file, "adapter_config.json")
                XCTAssertEqual((error as? QConvError)?.category.exitCode, 3)
                XCTAssertTrue("\(error)".contains("rank_pattern key '\(key)' uses "), "\(error)")
            }
        }
    }

    /// Keys that are short but expand to long automata are bounded together, not only one by one.
    func testTheAutomataOfAllKeysAreBoundedTogether() throws {
        let keys = (0..<60).map { "(a{1000}){15}x\($0)" }
        XCTAssertThrowsError(try config(rankKeys: keys)) { error in
            guard case .unsupportedPattern(_, "rank_pattern", _, let construct)? = error as? LoRAMergeError else { return XCTFail("\(error)") }
            XCTAssertTrue(construct.contains("more than 500000 automaton steps"), construct)
        }
    }

    /// Finding 2: a config with more keys than any real one is refused; a large one stays fast and small.
    func testPatternKeysAreBounded() throws {
        let tooMany = (0...LoRAAdapterConfig.maximumPatternKeys).map { "model.layers.\($0).mlp.down_proj" }
        XCTAssertThrowsError(try config(rankKeys: tooMany)) { error in
            guard case .invalidConfig(_, "rank_pattern", let reason)? = error as? LoRAMergeError else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("qconv reads at most \(LoRAAdapterConfig.maximumPatternKeys)"), reason)
        }
        let many = (0..<20_000).map { "model.layers.\($0).mlp.down_proj" }
        let parsed = try config(rankKeys: many, alphaKeys: ["o_proj"])
        let started = Date()
        for layer in stride(from: 0, to: 30_000, by: 7) {
            XCTAssertEqual(try parsed.rank(forModule: "model.layers.\(layer).mlp.down_proj"), layer < 20_000 ? layer + 1 : 99)
            XCTAssertEqual(try parsed.alpha(forModule: "model.layers.\(layer).mlp.down_proj"), 7)
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 2, "lookups cost the same however many keys cannot match")
    }

    /// Patterns whose matching would take more work than any real config are
    /// refused, naming the key (with a budget of 2 million steps instead of 250 million).
    func testTheStepBudgetEndsLookupsNamingTheKey() throws {
        let json = #"{"peft_type": "LORA", "rank_pattern": {"q_proj": 2, ".{0,1000}c": 3}}"#
        let parsed = try LoRAAdapterConfig(json: Array(json.utf8), file: "adapter_config.json", patternSteps: 2_000_000)
        // Every `.` starts the key again: a thousand states stay live on each character.
        let long = String(repeating: "a.", count: 2000)
        XCTAssertThrowsError(try (0..<10).forEach { _ in _ = try parsed.rank(forModule: long) }) { error in
            guard case let .patternsTooCostly(_, "rank_pattern", key, module, steps)? = error as? LoRAMergeError else { return XCTFail("\(error)") }
            XCTAssertEqual(key, ".{0,1000}c")
            XCTAssertEqual(module, long)
            XCTAssertEqual(steps, 2_000_000)
            XCTAssertEqual((error as? QConvError)?.category.exitCode, 3)
        }
        // The budget is what a real config never needs: hundreds of lookups against the same keys with real names.
        let real = try LoRAAdapterConfig(json: Array(json.utf8), file: "adapter_config.json", patternSteps: 2_000_000)
        for layer in 0..<300 { XCTAssertEqual(try real.rank(forModule: "model.layers.\(layer).self_attn.q_proj"), 2) }
    }
}
