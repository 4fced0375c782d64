import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// Hostile adapter configs through the binary (findings 1 and 2): a key
/// that backtracks forever elsewhere, and more keys than any real config,
/// end quickly, in bounded memory, with a clear exit 3 when refused.
final class AdapterConfigLimitsCLITests: XCTestCase {
    private let base = Fixtures.sample("lora_llama_basic/base")
    private let adapter = Fixtures.sample("lora_llama_basic/adapter")

    /// A copy of the sample adapter whose config gets `change`d.
    private func adapter(in directory: TemporaryDirectory, _ change: (inout [String: Any]) -> Void) throws -> String {
        let copy = directory.file("adapter")
        try FileManager.default.copyItem(atPath: adapter, toPath: copy)
        let path = copy + "/adapter_config.json"
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        change(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
        return copy
    }

    /// The debug build the tests run is several times slower than a release build (docs/RELIABILITY.md has those figures).
    private func assertBounded(_ run: MeasuredRun, seconds: Double = 10, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertNil(run.signal, "\(what) died of signal \(run.signal ?? 0)", file: file, line: line)
        XCTAssertLessThan(run.seconds, seconds, what, file: file, line: line)
        XCTAssertLessThan(run.peakBytes, 200 << 20, what, file: file, line: line)
    }

    func testABacktrackingKeyDoesNotStallTheMerge() throws {
        let directory = TemporaryDirectory()
        let hostile = try adapter(in: directory) { $0["rank_pattern"] = ["((((((((((.*)*)*)*)*)*)*)*)*)*)*x$": 4, "(x+x+)+y": 2] }
        for extra in [["--dry-run"], []] {
            let run = try runQConvMeasured(["merge-lora", base, hostile, directory.file("out")] + extra + ["--quiet"])
            XCTAssertEqual(run.status, 0, run.stderr)
            assertBounded(run, seconds: 5, "merge-lora \(extra)")
        }
    }

    func testAKeyPythonAcceptsButQConvCannotMatchIsExit3NamingIt() throws {
        let directory = TemporaryDirectory()
        let hostile = try adapter(in: directory) { $0["alpha_pattern"] = ["(q)\\1_proj": 4] }
        let result = try runQConv(["merge-lora", base, hostile, directory.file("out"), "--dry-run"])
        XCTAssertEqual(result.status, 3, result.stderr)
        XCTAssertEqual(result.stderr, "qconv: error: \(hostile)/adapter_config.json: alpha_pattern key '(q)\\1_proj' uses a backreference \\1 at position 3, "
            + "which qconv does not match (it matches literals, ., classes, *, +, ?, {m,n}, |, groups and anchors)\n")
    }

    func testMoreKeysThanAnyRealConfigAreRefused() throws {
        let directory = TemporaryDirectory()
        // The issue had 200,000 alpha_pattern keys; one more than the limit is refused the same way.
        let count = LoRAAdapterConfig.maximumPatternKeys + 1
        let hostile = try adapter(in: directory) { config in
            config["alpha_pattern"] = Dictionary(uniqueKeysWithValues: (0..<count).map { ("l\($0)", 8) })
        }
        let run = try runQConvMeasured(["merge-lora", base, hostile, directory.file("out"), "--dry-run"])
        XCTAssertEqual(run.status, 3, run.stderr)
        XCTAssertEqual(run.stderr, "qconv: error: \(hostile)/adapter_config.json: field 'alpha_pattern': rank_pattern and alpha_pattern hold \(count) keys; "
            + "qconv reads at most \(LoRAAdapterConfig.maximumPatternKeys)\n")
        assertBounded(run, "\(count) keys")
    }

    func testALargeConfigIsRefusedBeforeItIsParsed() throws {
        let directory = TemporaryDirectory()
        let hostile = try adapter(in: directory) { $0["notes"] = String(repeating: "x", count: LoRAAdapterConfig.maximumFileSize) }
        let run = try runQConvMeasured(["merge-lora", base, hostile, directory.file("out"), "--dry-run"])
        XCTAssertEqual(run.status, 3, run.stderr)
        XCTAssertTrue(run.stderr.hasPrefix("qconv: error: \(hostile)/adapter_config.json: field '(document)': "), run.stderr)
        XCTAssertTrue(run.stderr.hasSuffix(" bytes is larger than any adapter config should be\n"), run.stderr)
        assertBounded(run, seconds: 5, "a 4 MiB config")
    }

    /// Many keys that cannot match cost nothing per module: 20,000 of them merge as fast as none.
    func testManyKeysThatCannotMatchStayCheap() throws {
        let directory = TemporaryDirectory()
        let large = try adapter(in: directory) { config in
            config["rank_pattern"] = Dictionary(uniqueKeysWithValues: (0..<20_000).map { ("model.layers.\($0 + 2).self_attn.q_proj", 8) })
        }
        let run = try runQConvMeasured(["merge-lora", base, large, directory.file("out.safetensors"), "--quiet"])
        XCTAssertEqual(run.status, 0, run.stderr)
        assertBounded(run, "20,000 keys")
        // The keys name layers the model does not have: the merge is the plain one.
        let plain = try runQConv(["merge-lora", base, adapter, directory.file("plain.safetensors"), "--quiet"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertEqual(FileManager.default.contents(atPath: directory.file("out.safetensors")), FileManager.default.contents(atPath: directory.file("plain.safetensors")))
    }
}
