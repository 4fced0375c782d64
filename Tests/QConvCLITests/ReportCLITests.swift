import Foundation
import QConvTestSupport
import XCTest

/// What the reports of `verify`, `to-* --verify` and `inspect` say, and the
/// thresholds they check: the wording a CI log shows.
final class ReportCLITests: XCTestCase {
    let sample = Fixtures.sample("sharded_llama")

    private func lines(_ text: String, prefix: String) -> [String] {
        text.split(separator: "\n").map(String.init).filter { $0.hasPrefix(prefix) }
    }

    func testTheFailedLineSaysPerTensorNamesTheWorstAndGivesSixDigits() throws {
        let directory = TemporaryDirectory()
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet"]).status, 0)
        let strict = try runQConv(["verify", sample, directory.file("m.qc"), "--max-rel-rmse", "0.05"])
        XCTAssertEqual(strict.status, 1)
        let result = try XCTUnwrap(lines(strict.stdout, prefix: "result").first)
        XCTAssertEqual(result, "result    FAILED: 14 tensors out of bounds per tensor "
                       + "(worst: model.layers.0.self_attn.k_proj.weight: rel_rmse 0.0933835 > 0.05)")
        XCTAssertTrue(strict.stderr.contains("tensor 'model.layers.0.self_attn.k_proj.weight': rel_rmse 0.0933835 > 0.05\n"), strict.stderr)
        let passed = try runQConv(["verify", sample, directory.file("m.qc")])
        XCTAssertEqual(lines(passed.stdout, prefix: "result"), ["result    passed (no thresholds set)"])
        let loose = try runQConv(["verify", sample, directory.file("m.qc"), "--max-rel-rmse", "0.5"])
        XCTAssertEqual(lines(loose.stdout, prefix: "result"), ["result    passed"])
    }

    func testOverallThresholdsAndImpossibleValues() throws {
        let directory = TemporaryDirectory()
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet"]).status, 0)
        let overall = try runQConv(["verify", sample, directory.file("m.qc"), "--max-overall-rel-rmse", "0.05", "--min-overall-sqnr", "10"])
        XCTAssertEqual(overall.status, 1)
        XCTAssertEqual(overall.stderr, "qconv: error: \(directory.file("m.qc")): overall rel_rmse 0.0919587 > 0.05\n")
        XCTAssertEqual(lines(overall.stdout, prefix: "result"), ["result    FAILED: overall rel_rmse 0.0919587 > 0.05"])
        XCTAssertEqual(try runQConv(["verify", sample, directory.file("m.qc"), "--max-overall-rel-rmse", "0.1", "--min-overall-sqnr", "20"]).status, 0)
        let json = try runQConv(["verify", sample, directory.file("m.qc"), "--min-overall-sqnr", "30", "--json"])
        XCTAssertEqual(json.status, 1)
        let report = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(report["overall_violations"] as? [String], ["overall sqnr_db 20.7281 < 30"])
        XCTAssertEqual((report["thresholds"] as? [String: Any])?["min_overall_sqnr_db"] as? Double, 30)

        let impossible: [([String], String)] = [
            (["--min-cosine", "1.5"], "--min-cosine expects a number in -1...1, got '1.5'"),
            (["--max-rel-rmse", "-0.1"], "--max-rel-rmse expects a number >= 0, got '-0.1'"),
            (["--max-abs-err", "-1"], "--max-abs-err expects a number >= 0, got '-1'"),
            (["--max-overall-rel-rmse", "-1"], "--max-overall-rel-rmse expects a number >= 0, got '-1'"),
            (["--min-sqnr", "inf"], "--min-sqnr expects a number, got 'inf'"),
        ]
        for (extra, message) in impossible {
            let result = try runQConv(["verify", sample, directory.file("m.qc")] + extra)
            XCTAssertEqual(result.status, 2, "\(extra)")
            XCTAssertTrue(result.stderr.hasPrefix("qconv: error: " + message + "\n"), result.stderr)
        }
    }

    func testTheTableShowsTheTenWorstUnlessAllAreAsked() throws {
        let directory = TemporaryDirectory()
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet"]).status, 0)
        let short = try runQConv(["verify", sample, directory.file("m.qc")]).stdout
        let header = "TENSOR                                  SCHEME  ELEMENTS  MAX_ABS_ERR        RMSE   REL_RMSE  SQNR_DB    COSINE  STATUS"
        XCTAssertTrue(short.hasPrefix(header + "\n"), short)
        XCTAssertEqual(lines(short, prefix: "model.").count, 10)
        XCTAssertTrue(short.contains("(the 10 tensors furthest from the original, of 21; --tensors lists every one)"), short)
        let rows = lines(short, prefix: "model.")
        XCTAssertTrue(rows[0].hasPrefix("model.layers.0.self_attn.k_proj.weight"), rows[0])
        let all = try runQConv(["verify", sample, directory.file("m.qc"), "--tensors"]).stdout
        XCTAssertEqual(lines(all, prefix: "model.").count + lines(all, prefix: "lm_head").count, 21)
        XCTAssertFalse(all.contains("furthest"), all)
        XCTAssertTrue(all.contains("  identical\n"), all)
    }

    /// A container and its dequantized copy are measured over the same
    /// tensors, so their overall figures agree.
    func testAContainerAndItsDequantizedCopyHaveOneOverallBasis() throws {
        let directory = TemporaryDirectory()
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet"]).status, 0)
        XCTAssertEqual(try runQConv(["dequant", directory.file("m.qc"), directory.file("restored"), "--quiet"]).status, 0)
        func summary(_ converted: String) throws -> [String] {
            let result = try runQConv(["verify", sample, converted])
            XCTAssertEqual(result.status, 0, result.stderr)
            return lines(result.stdout, prefix: "tensors") + lines(result.stdout, prefix: "overall")
        }
        let container = try summary(directory.file("m.qc")), restored = try summary(directory.file("restored"))
        XCTAssertEqual(container, restored)
        XCTAssertEqual(container.first, "tensors   21: 14 approximated, 7 identical")
    }

    /// `to-*` and `inspect` give the same size for the same container.
    func testOneSizeBasisForConversionAndInspect() throws {
        let directory = TemporaryDirectory()
        let convert = try runQConv(["to-nf4", sample, directory.file("m.qc")])
        XCTAssertEqual(lines(convert.stdout, prefix: "size"), ["size         1.57 MB -> 432.71 kB of tensor data (27.6%), 452.35 kB on disk"])
        let inspect = try runQConv(["inspect", directory.file("m.qc")])
        XCTAssertEqual(lines(inspect.stdout, prefix: "size"), ["size         1.57 MB source -> 432.71 kB stored (27.6%)"])
    }

    /// A conversion whose check fails keeps its output, and says so.
    func testAFailedVerifyKeepsTheOutputAndSaysSo() throws {
        let directory = TemporaryDirectory()
        let output = directory.file("m.qc")
        let result = try runQConv(["to-nf4", sample, output, "--verify", "--max-rel-rmse", "0.01"])
        XCTAssertEqual(result.status, 1)
        XCTAssertEqual(lines(result.stdout, prefix: "kept"), ["kept      \(output) (written; only its check failed)"])
        XCTAssertEqual(directory.contents(), ["m.qc"])
        XCTAssertEqual(try runQConv(["verify", output]).status, 0, "what was kept is a sound container")
    }
}
