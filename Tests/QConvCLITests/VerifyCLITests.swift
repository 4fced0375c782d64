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
        // Overall over the approximated tensors only (`same` compared exact): SSE 1 over 4 elements,
        // sum of squares 30; the same basis as for a container, whose raw tensors do not count.
        let overall = json["overall"] as! [String: Any]
        XCTAssertEqual(overall["element_count"] as? Int, 4)
        XCTAssertEqual(overall["rmse"] as! Double, 0.5, accuracy: 1e-12)
        XCTAssertEqual(overall["sqnr_db"] as! Double, 10 * log10(30.0), accuracy: 1e-9)
        XCTAssertEqual(json["compared_tensor_count"] as? Int, 1)
        XCTAssertEqual(json["exact_tensor_count"] as? Int, 1)
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
        XCTAssertEqual(try runQConv(["verify", directory.file("a.safetensors"), directory.file("b.safetensors"), "--only", "w", "--quiet"]).status, 0)
    }

    /// SQNR is +inf for an exact match, -inf for an all-zero original with an
    /// error and NaN when a NaN reaches the sums: the text shows each as it is
    /// (not "inf", the best case, for all three), and JSON, which writes them
    /// all as null, tells the exact match apart with `exact`.
    func testNonFiniteSQNRIsShownAsItIs() throws {
        let directory = TemporaryDirectory()
        write(directory.file("a.safetensors"), [("zero", [0, 0, 0, 0]), ("nan", [1, .nan]), ("same", [1, 2])])
        write(directory.file("b.safetensors"), [("zero", [0, 2, 0, 0]), ("nan", [1, .nan]), ("same", [1, 2])])
        let paths = [directory.file("a.safetensors"), directory.file("b.safetensors")]

        func sqnrCell(_ stdout: String, _ name: String) -> String? {
            let row = stdout.split(separator: "\n").first { $0.hasPrefix(name + " ") }
            // TENSOR SCHEME ELEMENTS MAX_ABS_ERR RMSE REL_RMSE SQNR_DB COSINE [status]
            return row.map { $0.split(separator: " ").map(String.init) }.flatMap { $0.count > 6 ? $0[6] : nil }
        }
        let text = try runQConv(["verify"] + paths)
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertEqual(sqnrCell(text.stdout, "zero"), "-inf", text.stdout)
        XCTAssertEqual(sqnrCell(text.stdout, "nan"), "nan", text.stdout)
        XCTAssertEqual(sqnrCell(text.stdout, "same"), "inf", text.stdout)
        // The summary line: the all-zero original alone is the worst case, not the best.
        let zeroOnly = try runQConv(["verify"] + paths + ["--only", "zero"])
        XCTAssertTrue(zeroOnly.stdout.contains("SQNR -inf dB"), zeroOnly.stdout)
        let sameOnly = try runQConv(["verify"] + paths + ["--only", "same"])
        XCTAssertTrue(sameOnly.stdout.contains("SQNR inf dB"), sameOnly.stdout)
        let nanOnly = try runQConv(["verify"] + paths + ["--only", "nan"])
        XCTAssertTrue(nanOnly.stdout.contains("SQNR nan dB"), nanOnly.stdout)

        let (status, json, stderr) = try report(paths)
        XCTAssertEqual(status, 0, stderr)
        let tensors = json["tensors"] as! [[String: Any]]
        func metrics(_ name: String) -> [String: Any] { tensors.first { $0["name"] as? String == name }!["metrics"] as! [String: Any] }
        for name in ["zero", "nan", "same"] { XCTAssertTrue(metrics(name)["sqnr_db"] is NSNull, "\(name): non-finite SQNR is null") }
        XCTAssertEqual(metrics("same")["exact"] as? Bool, true)
        XCTAssertEqual(metrics("zero")["exact"] as? Bool, false, "null SQNR of a wrong tensor is not an exact match")
        XCTAssertEqual(metrics("zero")["max_abs_err"] as? Double, 2)
        XCTAssertEqual(metrics("nan")["exact"] as? Bool, false)
        XCTAssertEqual((json["overall"] as! [String: Any])["exact"] as? Bool, false)
        let exactOnly = try report(paths + ["--only", "same"])
        XCTAssertEqual((exactOnly.json["overall"] as! [String: Any])["exact"] as? Bool, true)
        XCTAssertTrue((exactOnly.json["overall"] as! [String: Any])["sqnr_db"] is NSNull)

        // A minimum SQNR is broken by -inf and NaN, not by the exact match.
        let strict = try report(paths + ["--min-sqnr", "10"])
        XCTAssertEqual(strict.status, 1)
        XCTAssertEqual(Set((strict.json["failures"] as! [[String: Any]]).compactMap { $0["name"] as? String }), ["zero", "nan"])
    }
}
