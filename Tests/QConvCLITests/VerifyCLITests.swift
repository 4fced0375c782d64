import Foundation
import QConvTestSupport
import XCTest

/// `qconv verify` on hand-made checkpoints whose metrics are known exactly.
final class VerifyCLITests: XCTestCase {
    func write(_ path: String, _ tensors: [(name: String, values: [Float])]) {
        var header = "{"
        var data: [UInt8] = []
        for (i, tensor) in tensors.enumerated() {
            let bytes = tensor.values.withUnsafeBytes { Array($0) }
            header += (i > 0 ? "," : "") + "\"\(tensor.name)\":{\"dtype\":\"F32\",\"shape\":[\(tensor.values.count)],\"data_offsets\":[\(data.count),\(data.count + bytes.count)]}"
            data += bytes
        }
        writeFile(path, craftSafetensors(header: header + "}", data: data))
    }

    func report(_ arguments: [String]) throws -> (status: Int32, json: [String: Any], stderr: String) {
        let result = try runQConv(["verify"] + arguments + ["--json", "--tensors"])
        let json = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] ?? [:]
        return (result.status, json, result.stderr)
    }

    func testMetricsOnHandComputedInput() throws {
        let directory = TemporaryDirectory()
        write(directory.file("a.safetensors"), [("w", [1, 2, 3, 4]), ("same", [0.5, -0.5])])
        write(directory.file("b.safetensors"), [("w", [1, 2, 3, 5]), ("same", [0.5, -0.5])])
        let (status, json, stderr) = try report([directory.file("a.safetensors"), directory.file("b.safetensors")])
        XCTAssertEqual(status, 0, stderr)
        let tensors = json["tensors"] as! [[String: Any]]
        let w = tensors.first { $0["name"] as? String == "w" }!["metrics"] as! [String: Any]
        // errors [0, 0, 0, 1]: max 1, RMSE sqrt(1/4) = 0.5, RMS of the original sqrt(30/4).
        XCTAssertEqual(w["max_abs_err"] as! Double, 1, accuracy: 1e-12)
        XCTAssertEqual(w["rmse"] as! Double, 0.5, accuracy: 1e-12)
        XCTAssertEqual(w["rel_rmse"] as! Double, 0.5 / (30.0 / 4).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(w["sqnr_db"] as! Double, 10 * log10(30.0), accuracy: 1e-9)
        XCTAssertEqual(w["cosine"] as! Double, 34 / (30.0 * 39).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(w["element_count"] as? Int, 4)
        let same = tensors.first { $0["name"] as? String == "same" }!["metrics"] as! [String: Any]
        XCTAssertEqual(same["max_abs_err"] as! Double, 0)
        XCTAssertTrue(same["sqnr_db"] is NSNull, "an exact match has infinite SQNR, written as null")
        XCTAssertEqual(same["cosine"] as! Double, 1, accuracy: 1e-12)
        // Overall over both tensors (6 elements): SSE 1, sum of squares 30.5.
        let overall = json["overall"] as! [String: Any]
        XCTAssertEqual(overall["element_count"] as? Int, 6)
        XCTAssertEqual(overall["rmse"] as! Double, (1.0 / 6).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(overall["sqnr_db"] as! Double, 10 * log10(30.5), accuracy: 1e-9)
    }

    func testThresholdsDecideTheExitCode() throws {
        let directory = TemporaryDirectory()
        write(directory.file("a.safetensors"), [("w", [1, 2, 3, 4])])
        write(directory.file("b.safetensors"), [("w", [1, 2, 3, 5])])
        let paths = [directory.file("a.safetensors"), directory.file("b.safetensors")]
        XCTAssertEqual(try report(paths + ["--max-abs-err", "1"]).status, 0)
        XCTAssertEqual(try report(paths + ["--max-abs-err", "0.99"]).status, 1)
        XCTAssertEqual(try report(paths + ["--min-sqnr", "14.7"]).status, 0)  // 10·log10(30) = 14.77
        XCTAssertEqual(try report(paths + ["--min-sqnr", "14.8"]).status, 1)
        XCTAssertEqual(try report(paths + ["--max-rel-rmse", "0.19"]).status, 0)  // 0.1826
        XCTAssertEqual(try report(paths + ["--max-rel-rmse", "0.18"]).status, 1)
        XCTAssertEqual(try report(paths + ["--min-cosine", "0.99"]).status, 0)  // 0.99400
        let failing = try report(paths + ["--min-cosine", "0.995"])
        XCTAssertEqual(failing.status, 1)
        XCTAssertEqual((failing.json["failures"] as! [[String: Any]]).first?["name"] as? String, "w")
        XCTAssertEqual(failing.json["passed"] as? Bool, false)
    }

    func testMissingTensorAndShapeMismatchAreExit3() throws {
        let directory = TemporaryDirectory()
        write(directory.file("a.safetensors"), [("w", [1, 2, 3, 4]), ("v", [1])])
        write(directory.file("b.safetensors"), [("w", [1, 2, 3, 4])])
        write(directory.file("c.safetensors"), [("w", [1, 2, 3]), ("v", [1])])
        for other in ["b.safetensors", "c.safetensors"] {
            let result = try runQConv(["verify", directory.file("a.safetensors"), directory.file(other)])
            XCTAssertEqual(result.status, 3, other)
            XCTAssertTrue(result.stderr.hasPrefix("qconv: error: ") && result.stderr.contains("tensor '"), result.stderr)
        }
        // --only restricts the comparison to what it names.
        XCTAssertEqual(try runQConv(["verify", directory.file("a.safetensors"), directory.file("b.safetensors"), "--only", "^w$", "--quiet"]).status, 0)
    }
}
