import Foundation
import QConvKit
import QConvTestSupport
import XCTest

/// `to-nf4`, `to-fp4`, `to-int8`, `dequant`, `inspect` and `verify` run as a user runs them.
final class ConversionCLITests: XCTestCase {
    // MARK: - Reference data (bitsandbytes)

    /// `to-nf4`/`to-fp4` then `dequant` on each reference file's `input` reproduces bnb's `dequant`.
    func testFourBitRoundTripMatchesBitsandbytes() throws {
        let files = Fixtures.files(in: "quant", prefix: "nf4_") + Fixtures.files(in: "quant", prefix: "fp4_")
        XCTAssertGreaterThanOrEqual(files.count, 30)
        for file in files {
            let reference = try Checkpoint(path: file)
            let metadata = Dictionary(uniqueKeysWithValues: (reference.metadata ?? []).map { ($0.key, $0.value) })
            let command = metadata["quant_type"] == "fp4" ? "to-fp4" : "to-nf4"
            let nested = metadata["nested"] == "true"
            let directory = TemporaryDirectory()
            var arguments = [command, file, directory.file("q.qc"), "--all", "--only", "^input$", "--block-size", metadata["blocksize"]!, "--quiet"]
            if !nested { arguments.append("--no-double-quant") }
            let convert = try runQConv(arguments)
            XCTAssertEqual(convert.status, 0, "\(file): \(convert.stderr)")
            let dequant = try runQConv(["dequant", directory.file("q.qc"), directory.file("out.safetensors"), "--quiet"])
            XCTAssertEqual(dequant.status, 0, "\(file): \(dequant.stderr)")

            let output = try Checkpoint(path: directory.file("out.safetensors"))
            let input = try XCTUnwrap(output.tensor(named: "input"))
            XCTAssertEqual(input.info.dtype, reference.tensor(named: "input")!.info.dtype, "dequantized to the input's dtype")
            let got = try input.stored.allFloats()
            let expected = try reference.tensor(named: "dequant")!.stored.allFloats()
            XCTAssertEqual(got.count, expected.count)
            if nested {
                let absmax = expected.reduce(Float(0)) { max($0, abs($1)) }
                let close = zip(got, expected).filter { abs($0 - $1) <= 1e-6 * absmax }.count
                XCTAssertGreaterThanOrEqual(Double(close), 0.999 * Double(expected.count), "\(file): \(close) of \(expected.count) within 1e-6 of absmax")
            } else {
                XCTAssertEqual(got.map(\.bitPattern), expected.map(\.bitPattern), "\(file): dequantized values differ from bitsandbytes")
            }
            // Every other tensor of the file came back bit for bit.
            for tensor in reference.tensors where tensor.name != "input" {
                XCTAssertEqual(try output.tensor(named: tensor.name)!.stored.allBytes(), try tensor.stored.allBytes(), "\(file): \(tensor.name)")
            }
        }
    }

    /// `to-int8 --outlier-threshold T` then `dequant --dtype f32` gives bnb's int8 part and the FP16 outlier columns.
    func testInt8RoundTripMatchesBitsandbytes() throws {
        let files = Fixtures.files(in: "quant", prefix: "int8_")
        XCTAssertEqual(files.count, 5)
        for file in files {
            let reference = try Checkpoint(path: file)
            let metadata = Dictionary(uniqueKeysWithValues: (reference.metadata ?? []).map { ($0.key, $0.value) })
            let directory = TemporaryDirectory()
            let convert = try runQConv(["to-int8", file, directory.file("q.qc"), "--all", "--only", "^input$",
                                        "--outlier-threshold", metadata["threshold"]!, "--quiet"])
            XCTAssertEqual(convert.status, 0, "\(file): \(convert.stderr)")
            let dequant = try runQConv(["dequant", directory.file("q.qc"), directory.file("out.safetensors"), "--dtype", "f32", "--quiet"])
            XCTAssertEqual(dequant.status, 0, "\(file): \(dequant.stderr)")

            let got = try Checkpoint(path: directory.file("out.safetensors")).tensor(named: "input")!.stored.allFloats()
            let input = try reference.tensor(named: "input")!.stored.allFloats()
            var expected = try reference.tensor(named: "dequant_int8_part")!.stored.allFloats()
            let columns = reference.tensor(named: "input")!.info.shape.last!
            let outliers = try reference.tensor(named: "outlier_cols").map { try $0.stored.allBytes() }.map { bytes in
                bytes.withUnsafeBytes { raw in (0..<bytes.count / 8).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) } }
            } ?? []
            for row in 0..<(input.count / columns) { for column in outliers { expected[row * columns + column] = input[row * columns + column] } }
            // An int8 code may differ by one where the scaled value sits within 1e-5 of a .5 tie; that moves a value by one step.
            let scales = try reference.tensor(named: "SCB")!.stored.allFloats()
            for i in 0..<expected.count where got[i] != expected[i] {
                let step = scales[i / columns] / 127
                XCTAssertLessThanOrEqual(abs(got[i] - expected[i]), step * 1.0001, "\(file): element \(i)")
            }
            let identical = zip(got, expected).filter { $0 == $1 }.count
            XCTAssertGreaterThanOrEqual(Double(identical), 0.999 * Double(expected.count), "\(file)")
        }
    }

    // MARK: - Samples

    func testShardedSampleConvertsInspectsAndDequantizes() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        let convert = try runQConv(["to-nf4", sample, directory.file("model.qc"), "--json"])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(convert.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(report["tensor_count"] as? Int, 21)
        XCTAssertEqual(report["quantized_tensor_count"] as? Int, 14)
        XCTAssertEqual(directory.contents(), ["model.qc"], "the container of a sharded model is one file")

        let inspect = try runQConv(["inspect", directory.file("model.qc"), "--tensors", "--json"])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        let summary = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(summary["format"] as? String, "qconv-container")
        XCTAssertEqual(summary["tensor_count"] as? Int, 21)
        XCTAssertEqual(summary["parameter_count"] as? Int, 391_808)
        let rows = summary["tensors"] as! [[String: Any]]
        XCTAssertEqual(Set(rows.compactMap { $0["scheme"] as? String }), ["nf4", "raw"])
        let bits = rows.first { $0["scheme"] as? String == "nf4" }!["bits_per_weight"] as! Double
        XCTAssertEqual(bits, 4.13, accuracy: 0.05, "4 bits plus double-quantized block constants")

        let dequant = try runQConv(["dequant", directory.file("model.qc"), directory.file("restored"), "--max-shard-size", "400kB", "--quiet"])
        XCTAssertEqual(dequant.status, 0, dequant.stderr)
        let restored = try Checkpoint(path: directory.file("restored"))
        XCTAssertEqual(restored.layout, .shardedFolder)
        XCTAssertEqual(restored.auxiliaryFiles, ["config.json"])
        let original = try Checkpoint(path: sample)
        XCTAssertEqual(Set(restored.tensors.map(\.name)), Set(original.tensors.map(\.name)))
        for tensor in original.tensors {
            let back = try XCTUnwrap(restored.tensor(named: tensor.name))
            XCTAssertEqual(back.info, tensor.info)
            if tensor.info.shape.count < 2 || TensorSelection.isLeftUnquantizedByDefault(tensor.name) {
                XCTAssertEqual(try back.stored.allBytes(), try tensor.stored.allBytes(), "\(tensor.name) is bit-identical")
            }
        }
    }

    func testVerifyReportsNF4AndInt8AndHonoursThresholds() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("nf4.qc"), "--quiet"]).status, 0)
        XCTAssertEqual(try runQConv(["to-int8", sample, directory.file("int8.qc"), "--quiet"]).status, 0)
        func relativeRMSE(_ container: String) throws -> Double {
            let result = try runQConv(["verify", sample, directory.file(container), "--json"])
            XCTAssertEqual(result.status, 0, result.stderr)
            let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
            XCTAssertEqual(report["exact_tensor_count"] as? Int, 7, "raw tensors are identical")
            return (report["overall"] as! [String: Any])["rel_rmse"] as! Double
        }
        let nf4 = try relativeRMSE("nf4.qc")
        let int8 = try relativeRMSE("int8.qc")
        XCTAssertEqual(nf4, 0.09, accuracy: 0.03, "NF4 on Gaussian-like weights")
        XCTAssertLessThan(int8, nf4 / 5, "int8 is far more precise than NF4")

        let strict = try runQConv(["verify", sample, directory.file("nf4.qc"), "--max-rel-rmse", "0.001"])
        XCTAssertEqual(strict.status, 1)
        XCTAssertTrue(strict.stderr.contains("qconv: error:") && strict.stderr.contains("model.layers.0.mlp.down_proj.weight"), strict.stderr)
        let loose = try runQConv(["verify", sample, directory.file("nf4.qc"), "--max-rel-rmse", "0.5", "--min-cosine", "0.9", "--min-sqnr", "10", "--quiet"])
        XCTAssertEqual(loose.status, 0, loose.stderr)
        XCTAssertEqual(loose.stdout, "")
        let inline = try runQConv(["to-int8", sample, directory.file("v.qc"), "--verify", "--min-sqnr", "100", "--quiet"])
        XCTAssertEqual(inline.status, 1, "--verify applies the thresholds")
    }

    func testVerifyRefusesMismatchedCheckpoints() throws {
        let directory = TemporaryDirectory()
        XCTAssertEqual(try runQConv(["to-nf4", Fixtures.sample("sharded_llama"), directory.file("nf4.qc"), "--quiet"]).status, 0)
        let result = try runQConv(["verify", Fixtures.sample("lora_llama_basic/base"), directory.file("nf4.qc")])
        XCTAssertEqual(result.status, 3)
        XCTAssertTrue(result.stderr.hasPrefix("qconv: error: "), result.stderr)
    }

    // MARK: - Damaged and hostile input

    func testDamagedContainersAreRefusedWithExit3() throws {
        let directory = TemporaryDirectory()
        let path = directory.file("model.qc")
        XCTAssertEqual(try runQConv(["to-nf4", Fixtures.sample("sharded_llama"), path, "--quiet"]).status, 0)
        let container = try ContainerFile(path: path)
        let tensor = container.tensors.first { $0.scheme == .nf4 }!
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[Int(container.dataStart + tensor.parts[0].offset) + 5] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: directory.file("flipped.qc")))
        try bytes.prefix(bytes.count - 7).write(to: URL(fileURLWithPath: directory.file("truncated.qc")))

        for arguments in [["verify", directory.file("flipped.qc")], ["dequant", directory.file("flipped.qc"), directory.file("out.safetensors")]] {
            let result = try runQConv(arguments)
            XCTAssertEqual(result.status, 3, arguments.joined(separator: " "))
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
            XCTAssertTrue(result.stderr.contains("tensor '\(tensor.name)'") && result.stderr.contains("'codes'"), result.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.file("out.safetensors")), "no partial output")
        let truncated = try runQConv(["verify", directory.file("truncated.qc")])
        XCTAssertEqual(truncated.status, 3)
        XCTAssertTrue(truncated.stderr.contains("lm_head.weight") && truncated.stderr.contains("truncated"), truncated.stderr)
        XCTAssertEqual(directory.contents().filter { $0.contains("qconv-tmp") }, [])
    }

    func testNonFiniteWeightIsRefusedAndLeavesNoOutput() throws {
        let directory = TemporaryDirectory()
        var values = [Float](repeating: 0.5, count: 64 * 4)
        values[130] = .nan
        let data = values.withUnsafeBytes { Array($0) }
        writeFile(directory.file("nan.safetensors"), craftSafetensors(
            header: #"{"w":{"dtype":"F32","shape":[4,64],"data_offsets":[0,1024]}}"#, data: data))
        for command in ["to-nf4", "to-fp4", "to-int8"] {
            let result = try runQConv([command, directory.file("nan.safetensors"), directory.file("out.qc")])
            XCTAssertEqual(result.status, 3, command)
            XCTAssertTrue(result.stderr.contains("tensor 'w'") && result.stderr.contains("element 130"), result.stderr)
            XCTAssertEqual(directory.contents(), ["nan.safetensors"], "\(command) left no output")
            let allowed = try runQConv([command, directory.file("nan.safetensors"), directory.file("out.qc"), "--allow-nonfinite", "--force", "--quiet"])
            XCTAssertEqual(allowed.status, 0, "\(command) --allow-nonfinite: \(allowed.stderr)")
            XCTAssertFalse(allowed.crashed)
            try FileManager.default.removeItem(atPath: directory.file("out.qc"))
        }
    }

    func testOptionsAreChecked() throws {
        let sample = Fixtures.sample("sharded_llama")
        let directory = TemporaryDirectory()
        for arguments in [["to-nf4", sample, directory.file("x"), "--block-size", "48"],
                          ["to-nf4", sample, directory.file("x"), "--only", "("],
                          ["to-int8", sample, directory.file("x"), "--outlier-threshold", "-1"],
                          ["to-nf4", sample, directory.file("x"), "--min-sqnr", "3"],
                          ["dequant", directory.file("x"), directory.file("y"), "--dtype", "f8"]] {
            let result = try runQConv(arguments)
            XCTAssertEqual(result.status, 2, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("qconv: error: "), result.stderr)
        }
        // An existing output needs --force; an input is never overwritten.
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet"]).status, 0)
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet"]).status, 2)
        XCTAssertEqual(try runQConv(["to-nf4", sample, directory.file("m.qc"), "--quiet", "--force"]).status, 0)
        XCTAssertEqual(try runQConv(["to-nf4", sample + "/model-00001-of-00011.safetensors", sample + "/model-00001-of-00011.safetensors", "--force"]).status, 2)
    }

    func testSelectionOptions() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        func schemes(_ extra: [String]) throws -> [String: String] {
            let result = try runQConv(["to-nf4", sample, directory.file("s.qc"), "--force", "--json"] + extra)
            XCTAssertEqual(result.status, 0, result.stderr)
            let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
            return Dictionary(uniqueKeysWithValues: (report["tensors"] as! [[String: Any]]).map { ($0["name"] as! String, $0["scheme"] as! String) })
        }
        let byDefault = try schemes([])
        XCTAssertEqual(byDefault["model.embed_tokens.weight"], "raw")
        XCTAssertEqual(byDefault["lm_head.weight"], "raw")
        XCTAssertEqual(byDefault["model.norm.weight"], "raw")
        XCTAssertEqual(byDefault["model.layers.0.self_attn.q_proj.weight"], "nf4")
        let all = try schemes(["--all"])
        XCTAssertEqual(Set(all.values), ["nf4"])
        let skipped = try schemes(["--skip", "mlp"])
        XCTAssertEqual(skipped["model.layers.0.mlp.up_proj.weight"], "raw")
        XCTAssertEqual(skipped["model.layers.0.self_attn.q_proj.weight"], "nf4")
        let only = try schemes(["--only", "lm_head", "--only", "q_proj"])
        XCTAssertEqual(only.filter { $0.value == "nf4" }.keys.sorted(), ["lm_head.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"])
    }
}
