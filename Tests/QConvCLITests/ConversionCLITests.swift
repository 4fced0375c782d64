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
            var arguments = [command, file, directory.file("q.qc"), "--all", "--only", "input", "--block-size", metadata["blocksize"]!, "--quiet"]
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
            // The file's order and __metadata__ come back too.
            XCTAssertEqual(output.tensors.map(\.name), reference.tensors.map(\.name), file)
            XCTAssertEqual(output.metadata?.map(\.key), reference.metadata?.map(\.key), file)
            XCTAssertEqual(output.metadata?.map(\.value), reference.metadata?.map(\.value), file)
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
            let convert = try runQConv(["to-int8", file, directory.file("q.qc"), "--all", "--only", "input",
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
                // Only there, and by exactly one code: outlier columns come back exactly.
                let scale = scales[i / columns]
                XCTAssertFalse(outliers.contains(i % columns), "\(file): element \(i) in an outlier column differs")
                let scaled = input[i] * 127 / scale
                let distanceToTie = abs(abs(scaled - scaled.rounded(.down)) - 0.5)
                XCTAssertLessThan(distanceToTie, 1e-5, "\(file): element \(i) differs away from a .5 tie (scaled \(scaled))")
                let expectedCode = (expected[i] / step).rounded(), gotCode = (got[i] / step).rounded()
                XCTAssertEqual(abs(gotCode - expectedCode), 1, "\(file): element \(i) differs by more or less than one step")
                XCTAssertEqual(got[i], gotCode * scale * Int8Vectorwise.inverse127, "\(file): element \(i) is not a code's value")
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
        // Every row's bits per weight counts all its parts; k_proj [64,128]: 4096 codes
        // + 128 absmax codes + 1 nested absmax (4 bytes) = 4228 bytes for 8192 weights.
        for row in rows {
            XCTAssertEqual(row["bits_per_weight"] as? Double, Double(row["bytes"] as! Int) * 8 / Double(row["parameters"] as! Int), "\(row["name"]!)")
        }
        let kProj = try XCTUnwrap(rows.first { $0["name"] as? String == "model.layers.0.self_attn.k_proj.weight" })
        XCTAssertEqual(kProj["bytes"] as? Int, 4228)
        XCTAssertEqual(kProj["bits_per_weight"] as? Double, 4.12890625)
        // The container summary: schemes, source size, bits per weight overall and over quantized tensors.
        let containerSummary = try XCTUnwrap(summary["container"] as? [String: Any])
        XCTAssertEqual(containerSummary["schemes"] as? [String: Int], ["raw": 7, "nf4": 14])
        XCTAssertEqual(containerSummary["source_tensor_bytes"] as? Int, 1_567_232)
        let nf4Rows = rows.filter { $0["scheme"] as? String == "nf4" }
        let nf4Bytes = nf4Rows.reduce(0) { $0 + ($1["bytes"] as! Int) }, nf4Parameters = nf4Rows.reduce(0) { $0 + ($1["parameters"] as! Int) }
        XCTAssertEqual(nf4Parameters, 325_632)
        XCTAssertEqual(containerSummary["quantized_bits_per_weight"] as! Double, Double(nf4Bytes) * 8 / Double(nf4Parameters), accuracy: 1e-12)
        XCTAssertEqual(containerSummary["bits_per_weight"] as! Double, Double(summary["tensor_bytes"] as! Int) * 8 / 391_808, accuracy: 1e-12)
        let text = try runQConv(["inspect", directory.file("model.qc")]).stdout
        XCTAssertTrue(text.contains("schemes      raw: 7, nf4: 14"), text)
        XCTAssertTrue(text.contains("size         1.57 MB source -> "), text)
        XCTAssertTrue(text.contains("bits/weight  4.128 quantized tensors, 8.835 overall"), text)

        let dequant = try runQConv(["dequant", directory.file("model.qc"), directory.file("restored"), "--max-shard-size", "400kB", "--quiet"])
        XCTAssertEqual(dequant.status, 0, dequant.stderr)
        let restored = try Checkpoint(path: directory.file("restored"))
        XCTAssertEqual(restored.layout, .shardedFolder)
        XCTAssertEqual(restored.auxiliaryFiles, ["config.json"])
        let original = try Checkpoint(path: sample)
        XCTAssertEqual(Set(restored.tensors.map(\.name)), Set(original.tensors.map(\.name)))
        XCTAssertEqual(restored.metadata?.map(\.key), original.metadata?.map(\.key))
        XCTAssertEqual(restored.metadata?.map(\.value), original.metadata?.map(\.value))
        // The sharded output holds what a single-file dequant writes, tensor for tensor.
        XCTAssertEqual(try runQConv(["dequant", directory.file("model.qc"), directory.file("single.safetensors"), "--quiet"]).status, 0)
        let single = try Checkpoint(path: directory.file("single.safetensors"))
        XCTAssertEqual(single.tensors.map(\.name), original.tensors.map(\.name), "the source's order")
        let unquantized: Set = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                                "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                                "model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight"]
        for tensor in original.tensors {
            let back = try XCTUnwrap(restored.tensor(named: tensor.name))
            XCTAssertEqual(back.info, tensor.info)
            XCTAssertEqual(try back.stored.allBytes(), try XCTUnwrap(single.tensor(named: tensor.name)).stored.allBytes(), tensor.name)
            if unquantized.contains(tensor.name) {
                XCTAssertEqual(try back.stored.allBytes(), try tensor.stored.allBytes(), "\(tensor.name) is bit-identical")
            } else {
                XCTAssertNotEqual(try back.stored.allBytes(), try tensor.stored.allBytes(), "\(tensor.name) was quantized")
            }
        }
        // --dtype converts every float tensor, the raw ones too.
        XCTAssertEqual(try runQConv(["dequant", directory.file("model.qc"), directory.file("bf16.safetensors"), "--dtype", "bf16", "--quiet"]).status, 0)
        let bf16 = try Checkpoint(path: directory.file("bf16.safetensors"))
        XCTAssertEqual(bf16.tensors.count, 21)
        XCTAssertEqual(Set(bf16.tensors.map(\.info.dtype)), [.bf16])
        let embedding = try original.tensor(named: "model.embed_tokens.weight")!.stored.allFloats()
        let embeddingBF16 = try bf16.tensor(named: "model.embed_tokens.weight")!.stored.allFloats()
        XCTAssertEqual(embeddingBF16.map(\.bitPattern), embedding.map { FloatConversion.float(fromBFloat16: FloatConversion.bfloat16Bits(from: $0)).bitPattern })
    }

    /// An all-raw container turns back into the same file, byte for byte.
    func testAllRawRoundTripIsByteIdentical() throws {
        let directory = TemporaryDirectory()
        let file = Fixtures.path("quant/nf4_one_block.safetensors")
        XCTAssertEqual(try runQConv(["to-nf4", file, directory.file("raw.qc"), "--skip", "*", "--quiet"]).status, 0)
        XCTAssertEqual(try runQConv(["dequant", directory.file("raw.qc"), directory.file("back.safetensors"), "--quiet"]).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: directory.file("back.safetensors"))), try Data(contentsOf: URL(fileURLWithPath: file)))

        // Raw tensors of several 256 KB pieces, copied on several threads, come back byte for byte.
        let large = (0..<(1_300_000 + 3)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }
        writeFile(directory.file("large.safetensors"), craftSafetensors(
            header: #"{"b":{"dtype":"U8","shape":[1300003],"data_offsets":[0,1300003]},"a":{"dtype":"U8","shape":[5],"data_offsets":[1300003,1300008]}}"#,
            data: large + [1, 2, 3, 4, 5]))
        XCTAssertEqual(try runQConv(["to-nf4", directory.file("large.safetensors"), directory.file("large.qc"), "--threads", "2", "--quiet"]).status, 0)
        XCTAssertEqual(try runQConv(["dequant", directory.file("large.qc"), directory.file("large-back.safetensors"), "--threads", "2", "--quiet"]).status, 0)
        let back = try Checkpoint(path: directory.file("large-back.safetensors"))
        XCTAssertEqual(back.tensors.map(\.name), ["b", "a"], "the source's order")
        XCTAssertEqual(try back.tensor(named: "b")!.stored.allBytes(), large)
        XCTAssertEqual(try back.tensor(named: "a")!.stored.allBytes(), [1, 2, 3, 4, 5])
    }

    /// What transformers leaves unquantized, by name: GPT-2's 2-D `wte`/`wpe`
    /// embeddings stay raw, its `c_attn`/`c_proj`/`c_fc` weights are quantized.
    func testDefaultSelectionOfAGPT2Model() throws {
        let directory = TemporaryDirectory()
        let result = try runQConv(["to-nf4", Fixtures.path("lora/lora_gpt2_fan_in_fan_out_bias/base"), directory.file("q.qc"), "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let schemes = Dictionary(uniqueKeysWithValues: (report["tensors"] as! [[String: Any]]).map { ($0["name"] as! String, $0["scheme"] as! String) })
        XCTAssertEqual(schemes["transformer.wte.weight"], "raw")
        XCTAssertEqual(schemes["transformer.wpe.weight"], "raw")
        XCTAssertEqual(schemes.filter { $0.value == "nf4" }.keys.sorted(), schemes.keys.filter {
            $0.hasSuffix(".weight") && ($0.contains(".attn.c_") || $0.contains(".mlp.c_"))
        }.sorted())
        XCTAssertFalse(schemes.filter { $0.value == "nf4" }.isEmpty)
        XCTAssertTrue(schemes.filter { $0.key.contains(".ln_") }.values.allSatisfy { $0 == "raw" })
    }

    /// `--skip` applies after `--only`.
    func testSkipIsAppliedAfterOnly() throws {
        let directory = TemporaryDirectory()
        let result = try runQConv(["to-nf4", Fixtures.sample("sharded_llama"), directory.file("q.qc"), "--only", "*q_proj*", "--skip", #"re:layers\.1\."#, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let quantized = (report["tensors"] as! [[String: Any]]).filter { $0["scheme"] as? String == "nf4" }.map { $0["name"] as! String }
        XCTAssertEqual(quantized, ["model.layers.0.self_attn.q_proj.weight"])
    }

    /// The thread count changes how work is shared, never the bytes written or the figures.
    func testOutputDoesNotDependOnTheThreadCount() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        func bytes(_ name: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: directory.file(name))) }
        for threads in ["1", "2", "3"] {
            for command in ["to-nf4", "to-fp4", "to-int8"] {
                XCTAssertEqual(try runQConv([command, sample, directory.file("\(command)-\(threads).qc"), "--threads", threads, "--quiet"]).status, 0)
            }
            XCTAssertEqual(try runQConv(["dequant", directory.file("to-nf4-1.qc"), directory.file("d-\(threads).safetensors"), "--threads", threads, "--quiet"]).status, 0)
        }
        for command in ["to-nf4", "to-fp4", "to-int8"] {
            XCTAssertEqual(try bytes("\(command)-1.qc"), try bytes("\(command)-2.qc"), command)
            XCTAssertEqual(try bytes("\(command)-1.qc"), try bytes("\(command)-3.qc"), command)
        }
        XCTAssertEqual(try bytes("d-1.safetensors"), try bytes("d-2.safetensors"))
        XCTAssertEqual(try bytes("d-1.safetensors"), try bytes("d-3.safetensors"))
        func overall(_ threads: String) throws -> NSDictionary {
            let result = try runQConv(["verify", sample, directory.file("to-int8-1.qc"), "--json", "--threads", threads])
            return ((try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any])["overall"] as! NSDictionary)
        }
        XCTAssertEqual(try overall("1"), try overall("2"))
    }

    /// The same on a tensor of five 1M-element chunks with outlier columns, so
    /// that several workers share it, slots are reused, int8's outlier scans
    /// are merged across chunks and its second pass runs.
    func testMultiChunkOutputDoesNotDependOnTheThreadCount() throws {
        let directory = TemporaryDirectory()
        let rows = 4352, columns = 1024
        var values = [Float16](repeating: 0, count: rows * columns)
        for i in values.indices { values[i] = Float16(Float((i &* 7919) % 2001 - 1000) * 1e-5) }
        for row in stride(from: 3, to: rows, by: 997) { values[row * columns + 5] = 0.75; values[row * columns + 900] = -1.5 }
        let data = values.withUnsafeBytes { Array($0) }
        let input = directory.file("big.safetensors")
        writeFile(input, craftSafetensors(header: #"{"layer.weight":{"dtype":"F16","shape":[4352,1024],"data_offsets":[0,\#(data.count)]}}"#, data: data))
        func bytes(_ name: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: directory.file(name))) }
        for threads in ["1", "2", "3", "8"] {
            for command in ["to-nf4", "to-int8"] {
                let result = try runQConv([command, input, directory.file("\(command)-\(threads).qc"), "--threads", threads, "--json"])
                XCTAssertEqual(result.status, 0, result.stderr)
                if command == "to-int8" {
                    let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
                    let tensor = (report["tensors"] as! [[String: Any]])[0]
                    XCTAssertEqual(tensor["outlier_columns"] as? Int, 2, "the second pass runs")
                }
            }
            XCTAssertEqual(try runQConv(["dequant", directory.file("to-int8-1.qc"), directory.file("d-\(threads).safetensors"), "--threads", threads, "--quiet"]).status, 0)
        }
        for threads in ["2", "3", "8"] {
            for command in ["to-nf4", "to-int8"] {
                XCTAssertEqual(try bytes("\(command)-1.qc"), try bytes("\(command)-\(threads).qc"), "\(command) --threads \(threads)")
            }
            XCTAssertEqual(try bytes("d-1.safetensors"), try bytes("d-\(threads).safetensors"), "dequant --threads \(threads)")
        }
        func overall(_ threads: String) throws -> NSDictionary {
            let result = try runQConv(["verify", input, directory.file("to-int8-1.qc"), "--json", "--threads", threads])
            XCTAssertEqual(result.status, 0, result.stderr)
            return ((try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any])["overall"] as! NSDictionary)
        }
        XCTAssertEqual(try overall("1"), try overall("3"))
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
            // The overall figures are over the quantized tensors only.
            XCTAssertEqual(report["compared_tensor_count"] as? Int, 14)
            XCTAssertEqual((report["overall"] as! [String: Any])["element_count"] as? Int, 325_632)
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
        // A single container gets an integrity check, which would ignore comparison options: refused.
        for extra in [["--max-rel-rmse", "0.001"], ["--only", "q_proj"], ["--tensors", "--json"]] {
            let ignored = try runQConv(["verify", directory.file("nf4.qc")] + extra)
            XCTAssertEqual(ignored.status, 2, "\(extra): \(ignored.stderr)")
            XCTAssertTrue(ignored.stderr.contains("need ORIGINAL and CONVERTED"), ignored.stderr)
        }
        let inline = try runQConv(["to-int8", sample, directory.file("v.qc"), "--verify", "--min-sqnr", "100", "--quiet"])
        XCTAssertEqual(inline.status, 1, "--verify applies the thresholds")
        let summary = try runQConv(["to-int8", sample, directory.file("w.qc"), "--verify"])
        XCTAssertEqual(summary.status, 0, summary.stderr)
        XCTAssertTrue(summary.stdout.contains("verified  \(directory.file("w.qc")) against \(sample)"), summary.stdout)
        XCTAssertTrue(summary.stdout.contains("tensors   21: 14 approximated, 7 identical") && summary.stdout.contains("result    passed"), summary.stdout)
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
        let tensor = container.tensors.first { $0.scheme.name == "nf4" }!
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[Int(container.dataStart + tensor.parts[0].offset) + 5] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: directory.file("flipped.qc")))
        try bytes.prefix(bytes.count - 7).write(to: URL(fileURLWithPath: directory.file("truncated.qc")))

        // The integrity check, and the two commands that check checksums while they decode.
        for arguments in [["verify", directory.file("flipped.qc")], ["dequant", directory.file("flipped.qc"), directory.file("out.safetensors")],
                          ["verify", Fixtures.sample("sharded_llama"), directory.file("flipped.qc")],
                          ["dequant", directory.file("flipped.qc"), directory.file("out.safetensors"), "--dtype", "bf16"]] {
            let result = try runQConv(arguments)
            XCTAssertEqual(result.status, 3, arguments.joined(separator: " "))
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
            XCTAssertTrue(result.stderr.contains("tensor '\(tensor.name)'") && result.stderr.contains("'codes'"), result.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.file("out.safetensors")), "no partial output")
        // A raw tensor's part, checked while `verify ORIGINAL CONVERTED` compares it byte for byte.
        let raw = container.tensors.first { $0.scheme == .raw }!
        var rawFlipped = try Data(contentsOf: URL(fileURLWithPath: path))
        rawFlipped[Int(container.dataStart + raw.parts[0].offset) + 3] ^= 0x10
        try rawFlipped.write(to: URL(fileURLWithPath: directory.file("raw-flipped.qc")))
        let rawResult = try runQConv(["verify", Fixtures.sample("sharded_llama"), directory.file("raw-flipped.qc")])
        XCTAssertEqual(rawResult.status, 3, rawResult.stderr)
        XCTAssertTrue(rawResult.stderr.contains("tensor '\(raw.name)'") && rawResult.stderr.contains("checksum"), rawResult.stderr)
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

    /// A NaN in a later tile of a chunk is found and named by its index in the
    /// whole tensor.
    func testNonFiniteWeightBeyondTheFirstTileIsNamedByItsIndex() throws {
        let directory = TemporaryDirectory()
        var values = [Float16](repeating: 0.01, count: 64 * 1024)
        values[40 * 1024 + 7] = .infinity
        let data = values.withUnsafeBytes { Array($0) }
        writeFile(directory.file("inf.safetensors"), craftSafetensors(
            header: #"{"w":{"dtype":"F16","shape":[64,1024],"data_offsets":[0,131072]}}"#, data: data))
        for command in ["to-nf4", "to-int8"] {
            let result = try runQConv([command, directory.file("inf.safetensors"), directory.file("out.qc")])
            XCTAssertEqual(result.status, 3, command)
            XCTAssertTrue(result.stderr.contains("tensor 'w'") && result.stderr.contains("element 40967 is inf;"), result.stderr)
            XCTAssertEqual(directory.contents(), ["inf.safetensors"], "\(command) left no output")
        }
        // In the second 1M-element chunk, third tile of it, whatever the thread count.
        var later = [Float16](repeating: 0.01, count: 1100 * 1024)
        later[1_089_543] = -.infinity
        let laterData = later.withUnsafeBytes { Array($0) }
        writeFile(directory.file("later.safetensors"), craftSafetensors(
            header: #"{"w":{"dtype":"F16","shape":[1100,1024],"data_offsets":[0,\#(laterData.count)]}}"#, data: laterData))
        for command in ["to-nf4", "to-int8"] {
            for threads in ["1", "4"] {
                let result = try runQConv([command, directory.file("later.safetensors"), directory.file("out.qc"), "--threads", threads])
                XCTAssertEqual(result.status, 3, "\(command) --threads \(threads)")
                XCTAssertTrue(result.stderr.contains("element 1089543 is -inf;"), result.stderr)
            }
        }
        XCTAssertEqual(directory.contents().sorted(), ["inf.safetensors", "later.safetensors"])
    }

    func testOptionsAreChecked() throws {
        let sample = Fixtures.sample("sharded_llama")
        let directory = TemporaryDirectory()
        for arguments in [["to-nf4", sample, directory.file("x"), "--block-size", "48"],
                          ["to-nf4", sample, directory.file("x"), "--only", "re:("],
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
        let skipped = try schemes(["--skip", "*mlp*"])
        XCTAssertEqual(skipped["model.layers.0.mlp.up_proj.weight"], "raw")
        XCTAssertEqual(skipped["model.layers.0.self_attn.q_proj.weight"], "nf4")
        let only = try schemes(["--only", "lm_head*", "--only", "*q_proj*"])
        XCTAssertEqual(only.filter { $0.value == "nf4" }.keys.sorted(), ["lm_head.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight"])
    }

    // MARK: - Audit: int8 small shapes, FP16 rounding, reports; 4-bit --verify and half outputs

    /// A safetensors file of F32 (or BF16, the upper halves of the given floats) tensors of any shape.
    private func writeTensors(_ path: String, _ tensors: [(name: String, shape: [Int], values: [Float])], dtype: String = "F32") {
        var header = "{"
        var data: [UInt8] = []
        for (i, tensor) in tensors.enumerated() {
            precondition(tensor.shape.reduce(1, *) == tensor.values.count)
            let bytes: [UInt8]
            switch dtype {
            case "BF16": bytes = tensor.values.flatMap { withUnsafeBytes(of: UInt16(truncatingIfNeeded: $0.bitPattern >> 16).littleEndian, Array.init) }
            case "F64": bytes = tensor.values.flatMap { withUnsafeBytes(of: Double($0).bitPattern.littleEndian, Array.init) }
            default: bytes = tensor.values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
            }
            header += (i > 0 ? "," : "") + "\"\(tensor.name)\":\(tensorEntry(dtype, tensor.shape, data.count, data.count + bytes.count))"
            data += bytes
        }
        writeFile(path, craftSafetensors(header: header + "}", data: data))
    }

    /// Deterministic values in (-scale, scale).
    private func randomValues(_ count: Int, scale: Float, seed: UInt64) -> [Float] {
        var generator = SplitMix64(seed: seed)
        return (0..<count).map { _ in Float.random(in: -scale..<scale, using: &generator) }
    }

    /// bitsandbytes' `int8_vectorwise_quant(A.half(), threshold)` as ../shared/FACTS.md states it,
    /// and the values `dequant --dtype f32` must give: `CB * SCB * float32(1/127)`, outlier columns
    /// as their float16 values. `roundToHalf: false` skips the float16 rounding (to show it matters).
    private func bitsandbytesInt8(_ values: [Float], shape: [Int], threshold: Float, roundToHalf: Bool = true)
        -> (codes: [Int8], scales: [Float], outlierColumns: [Int], values: [Float]) {
        let columns = shape.last ?? 1
        let rows = values.count / columns
        let a = roundToHalf ? values.map { Float(Float16($0)) } : values
        let isOutlier = a.map { threshold > 0 && abs($0) >= threshold }
        let outlierColumns = (0..<columns).filter { c in (0..<rows).contains { isOutlier[$0 * columns + c] } }
        var codes = [Int8](repeating: 0, count: a.count), scales = [Float](repeating: 0, count: rows)
        var restored = [Float](repeating: 0, count: a.count)
        for r in 0..<rows {
            let row = r * columns..<(r + 1) * columns
            // Outlier elements are zeroed before the row absmax is taken.
            let absmax = row.filter { !isOutlier[$0] }.map { abs(a[$0]) }.max() ?? 0
            scales[r] = absmax
            for i in row {
                var code: Float = (isOutlier[i] || absmax == 0) ? 0 : (a[i] * (127 / absmax)).rounded(.toNearestOrEven)
                // With more than one row the outlier columns of CB are zeroed; a single row keeps them (only outliers, already 0).
                if rows > 1 && outlierColumns.contains(i - r * columns) { code = 0 }
                codes[i] = Int8(code)
                restored[i] = Float(codes[i]) * absmax * Float(7.874015718698502e-3)
            }
            for c in outlierColumns { restored[r * columns + c] = a[r * columns + c] }
        }
        return (codes, scales, outlierColumns, restored)
    }

    /// An F64 source comes back as F64 (each tensor in its source dtype), the
    /// float32 dequantized values widened exactly; `--dtype f32` still narrows.
    func testF64SourceComesBackAsF64() throws {
        let directory = TemporaryDirectory()
        writeTensors(directory.file("in.safetensors"), [("w", [4, 64], randomValues(256, scale: 0.1, seed: 9))], dtype: "F64")
        XCTAssertEqual(try runQConv(["to-nf4", directory.file("in.safetensors"), directory.file("q.qc"), "--all", "--quiet"]).status, 0)
        let f64 = try runQConv(["dequant", directory.file("q.qc"), directory.file("f64.safetensors"), "--quiet"])
        XCTAssertEqual(f64.status, 0, f64.stderr)
        let f32 = try runQConv(["dequant", directory.file("q.qc"), directory.file("f32.safetensors"), "--dtype", "f32", "--quiet"])
        XCTAssertEqual(f32.status, 0, f32.stderr)
        let wide = try XCTUnwrap(try Checkpoint(path: directory.file("f64.safetensors")).tensor(named: "w"))
        let narrow = try XCTUnwrap(try Checkpoint(path: directory.file("f32.safetensors")).tensor(named: "w"))
        XCTAssertEqual(wide.info.dtype, .f64)
        XCTAssertEqual(narrow.info.dtype, .f32)
        let doubles = try wide.stored.allBytes().withUnsafeBytes { raw in (0..<256).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) } }
        XCTAssertEqual(doubles, try narrow.stored.allFloats().map(Double.init))
        // The F64 source was read as the values it holds: the same values stored
        // as F32 (exact either way) quantize to the same result.
        writeTensors(directory.file("in32.safetensors"), [("w", [4, 64], randomValues(256, scale: 0.1, seed: 9))], dtype: "F32")
        XCTAssertEqual(try runQConv(["to-nf4", directory.file("in32.safetensors"), directory.file("q32.qc"), "--all", "--quiet"]).status, 0)
        XCTAssertEqual(try runQConv(["dequant", directory.file("q32.qc"), directory.file("from32.safetensors"), "--quiet"]).status, 0)
        let fromF32 = try XCTUnwrap(try Checkpoint(path: directory.file("from32.safetensors")).tensor(named: "w"))
        XCTAssertEqual(try fromF32.stored.allFloats().map(\.bitPattern), try narrow.stored.allFloats().map(\.bitPattern))
    }

    /// 1-D, scalar, rank-3 and single-row tensors through `to-int8 --all` and
    /// `dequant --dtype f32`: the container holds bitsandbytes' CB, SCB and
    /// outlier columns, and the values are bitsandbytes' (outliers in FP16).
    func testInt8SmallShapesMatchBitsandbytes() throws {
        let directory = TemporaryDirectory()
        var vector = randomValues(10, scale: 0.45, seed: 1)
        vector[3] = 0.75
        var cube = randomValues(24, scale: 0.45, seed: 2)
        cube[5] = -0.6; cube[17] = 0.9  // columns 1 and 1 of rows 1 and 4
        cube[22] = 0.55                  // column 2 of row 5
        var row = randomValues(6, scale: 0.45, seed: 3)
        row[4] = -1.25
        let tensors: [(name: String, shape: [Int], values: [Float])] = [
            ("scalar", [], [0.3]), ("vector", [10], vector), ("cube", [2, 3, 4], cube), ("row", [1, 6], row),
        ]
        writeTensors(directory.file("in.safetensors"), tensors)
        for threshold: Float in [0, 0.5] {
            let container = directory.file("t\(threshold).qc"), output = directory.file("t\(threshold).safetensors")
            let convert = try runQConv(["to-int8", directory.file("in.safetensors"), container, "--all", "--outlier-threshold", "\(threshold)", "--quiet"])
            XCTAssertEqual(convert.status, 0, convert.stderr)
            let dequant = try runQConv(["dequant", container, output, "--dtype", "f32", "--quiet"])
            XCTAssertEqual(dequant.status, 0, dequant.stderr)
            let file = try ContainerFile(path: container)
            let restored = try Checkpoint(path: output)
            var outlierColumnsSeen = 0
            for tensor in tensors {
                let expected = bitsandbytesInt8(tensor.values, shape: tensor.shape, threshold: threshold)
                let entry = try XCTUnwrap(file.tensor(named: tensor.name), tensor.name)
                XCTAssertEqual(entry.scheme.name, "int8", tensor.name)
                let codes = try file.readPart(try XCTUnwrap(entry.part(.codes)), of: tensor.name).map { Int8(bitPattern: $0) }
                XCTAssertEqual(codes, expected.codes, "\(tensor.name), threshold \(threshold): CB")
                let scales = try file.readPart(try XCTUnwrap(entry.part(.rowScales)), of: tensor.name)
                XCTAssertEqual(scales.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }, expected.scales, "\(tensor.name): SCB")
                let columns = try file.readPart(try XCTUnwrap(entry.part(.outlierColumns)), of: tensor.name)
                XCTAssertEqual(columns.withUnsafeBytes { $0.bindMemory(to: Int32.self).map(Int.init) }, expected.outlierColumns, "\(tensor.name): outlier columns")
                outlierColumnsSeen += expected.outlierColumns.count
                let back = try XCTUnwrap(restored.tensor(named: tensor.name))
                XCTAssertEqual(back.info.shape, tensor.shape)
                XCTAssertEqual(try back.stored.allFloats().map(\.bitPattern), expected.values.map(\.bitPattern), "\(tensor.name), threshold \(threshold): values")
            }
            XCTAssertEqual(outlierColumnsSeen, threshold == 0 ? 0 : 4, "vector 1, cube 2, row 1")
        }
    }

    /// F32 values are rounded to FP16 before quantizing: here that moves the
    /// row scale (1.0001 -> 1) and a code (0.4999 -> 0.5, 63.49 -> the tie 63.5 -> 64).
    func testInt8RoundsF32ToHalfBeforeQuantizing() throws {
        let directory = TemporaryDirectory()
        let values: [Float] = [1.0001, 0.4999, -0.25, 0.1, 0.3, -0.7, 0.2, 0.05]
        writeTensors(directory.file("in.safetensors"), [("w", [2, 4], values)])
        let expected = bitsandbytesInt8(values, shape: [2, 4], threshold: 0)
        let unrounded = bitsandbytesInt8(values, shape: [2, 4], threshold: 0, roundToHalf: false)
        XCTAssertNotEqual(expected.scales, unrounded.scales, "the input must tell the two apart")
        XCTAssertNotEqual(expected.codes, unrounded.codes, "the input must tell the two apart")
        XCTAssertEqual(expected.scales[0], 1)
        XCTAssertEqual(expected.codes[1], 64)

        let container = directory.file("w.qc")
        XCTAssertEqual(try runQConv(["to-int8", directory.file("in.safetensors"), container, "--all", "--outlier-threshold", "0", "--quiet"]).status, 0)
        let file = try ContainerFile(path: container)
        let entry = try XCTUnwrap(file.tensor(named: "w"))
        XCTAssertEqual(try file.readPart(entry.part(.codes)!, of: "w").map { Int8(bitPattern: $0) }, expected.codes)
        XCTAssertEqual(try file.readPart(entry.part(.rowScales)!, of: "w").withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }, expected.scales)
        XCTAssertEqual(try runQConv(["dequant", container, directory.file("out.safetensors"), "--dtype", "f32", "--quiet"]).status, 0)
        let back = try Checkpoint(path: directory.file("out.safetensors")).tensor(named: "w")!.stored.allFloats()
        XCTAssertEqual(back.map(\.bitPattern), expected.values.map(\.bitPattern))
    }

    /// A finite F32 or BF16 value beyond float16's range becomes infinite when
    /// rounded to FP16 for int8; the error says so (exit 3), and names the
    /// source value, not the infinity. A real infinity is still reported as one.
    func testInt8RefusesValuesThatOverflowHalf() throws {
        let directory = TemporaryDirectory()
        var values = (0..<16).map { Float($0) / 100 }
        values[11] = 70_144  // exact in BF16 and F32, above 65504
        writeTensors(directory.file("f32.safetensors"), [("w", [2, 8], values)])
        writeTensors(directory.file("bf16.safetensors"), [("w", [2, 8], values)], dtype: "BF16")
        var infinite = values
        infinite[11] = .infinity
        writeTensors(directory.file("inf.safetensors"), [("w", [2, 8], infinite)])
        for input in ["f32.safetensors", "bf16.safetensors"] {
            for rule in [[], ["--outlier-threshold", "0"], ["--outlier-threshold", "0.1"]] {
                let result = try runQConv(["to-int8", directory.file(input), directory.file("out.qc"), "--all"] + rule)
                XCTAssertEqual(result.status, 3, "\(input) \(rule): \(result.stderr)")
                XCTAssertTrue(result.stderr.hasPrefix("qconv: error: \(directory.file(input)): tensor 'w': element 11 is 70144.0"), result.stderr)
                XCTAssertTrue(result.stderr.contains("overflows float16"), result.stderr)
                XCTAssertFalse(result.stderr.contains(" is inf"), result.stderr)
                XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
            }
        }
        let real = try runQConv(["to-int8", directory.file("inf.safetensors"), directory.file("out.qc"), "--all"])
        XCTAssertEqual(real.status, 3)
        XCTAssertTrue(real.stderr.contains("element 11 is inf") && !real.stderr.contains("overflows"), real.stderr)
        // 4-bit quantization does not round to FP16: the same value is fine there.
        XCTAssertEqual(try runQConv(["to-nf4", directory.file("f32.safetensors"), directory.file("out.qc"), "--all", "--quiet"]).status, 0)
        XCTAssertEqual(directory.contents().filter { $0.contains("qconv-tmp") }, [])
    }

    /// `to-int8 --json` reports the rule, its threshold, and each tensor's resolved threshold.
    func testInt8JSONReportsOutlierThresholds() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        let original = try Checkpoint(path: sample)
        func convert(_ extra: [String]) throws -> [String: Any] {
            let result = try runQConv(["to-int8", sample, directory.file("q.qc"), "--force", "--json"] + extra)
            XCTAssertEqual(result.status, 0, result.stderr)
            return try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        }
        func int8Rows(_ report: [String: Any]) -> [[String: Any]] {
            (report["tensors"] as! [[String: Any]]).filter { $0["scheme"] as? String == "int8" }
        }

        let absolute = try convert(["--outlier-threshold", "0.06"])
        XCTAssertEqual(absolute["outlier_rule"] as? String, "abs:0.06")
        XCTAssertEqual(absolute["outlier_threshold"] as? Double, 0.06)
        XCTAssertTrue(absolute["outlier_rms_multiple"] is NSNull)
        XCTAssertNil(absolute["block_size"])
        let resolved = Double(Float(Float16(Float(0.06))))
        var split = 0
        for row in int8Rows(absolute) {
            let name = row["name"] as! String
            let values = try original.tensor(named: name)!.stored.allFloats().map { Float(Float16($0)) }
            let columns = (row["shape"] as! [Int]).last!
            let expected = Set(values.indices.filter { abs(values[$0]) >= Float(resolved) }.map { $0 % columns }).count
            XCTAssertEqual(row["outlier_columns"] as? Int, expected, name)
            if expected > 0 {
                XCTAssertEqual(row["outlier_threshold"] as? Double, resolved, name)
                split += 1
            } else {
                XCTAssertTrue(row["outlier_threshold"] is NSNull, name)
            }
        }
        XCTAssertGreaterThan(split, 0)

        let byDefault = try convert([])
        XCTAssertEqual(byDefault["outlier_rule"] as? String, OutlierCriterion.default.description)
        XCTAssertTrue(byDefault["outlier_threshold"] is NSNull)
        XCTAssertEqual(byDefault["outlier_rms_multiple"] as? Double, 10)
        XCTAssertEqual(int8Rows(byDefault).count, 14)
        for row in int8Rows(byDefault) { XCTAssertNotNil(row["outlier_threshold"], "every int8 tensor has the field") }

        // An RMS multiple small enough to split columns off: T = fp16(K * RMS) of each tensor.
        let relative = try convert(["--outlier-rms-multiple", "3"])
        XCTAssertEqual(relative["outlier_rms_multiple"] as? Double, 3)
        for row in int8Rows(relative) {
            let name = row["name"] as! String
            let values = try original.tensor(named: name)!.stored.allFloats().map { Double(Float(Float16($0))) }
            let rms = (values.reduce(0) { $0 + $1 * $1 } / Double(values.count)).squareRoot()
            let threshold = Double(Float(Float16(Float(3 * rms))))
            XCTAssertGreaterThan(row["outlier_columns"] as? Int ?? 0, 0, name)
            XCTAssertEqual(row["outlier_threshold"] as? Double, threshold, name)
        }

        let none = try convert(["--outlier-threshold", "0"])
        XCTAssertEqual(none["outlier_rule"] as? String, "none")
        XCTAssertTrue(none["outlier_threshold"] is NSNull)
        XCTAssertTrue(none["outlier_rms_multiple"] is NSNull)
        for row in int8Rows(none) {
            XCTAssertEqual(row["outlier_columns"] as? Int, 0)
            XCTAssertTrue(row["outlier_threshold"] is NSNull)
        }
    }

    /// `--verify` on to-nf4 and to-fp4 applies the thresholds, as on to-int8.
    func testFourBitVerifyHonoursThresholds() throws {
        let directory = TemporaryDirectory()
        let sample = Fixtures.sample("sharded_llama")
        for command in ["to-nf4", "to-fp4"] {
            let strict = try runQConv([command, sample, directory.file("s.qc"), "--force", "--verify", "--max-rel-rmse", "0.001"])
            XCTAssertEqual(strict.status, 1, "\(command): \(strict.stderr)")
            XCTAssertTrue(strict.stdout.contains("FAILED"), strict.stdout)
            XCTAssertTrue(strict.stderr.contains("qconv: error:") && strict.stderr.contains("model.layers.0.mlp.down_proj.weight"), strict.stderr)
            XCTAssertTrue(FileManager.default.fileExists(atPath: directory.file("s.qc")), "the container is kept for inspection")
            let impossible = try runQConv([command, sample, directory.file("s.qc"), "--force", "--verify", "--min-sqnr", "100", "--quiet"])
            XCTAssertEqual(impossible.status, 1, command)
            let json = try runQConv([command, sample, directory.file("s.qc"), "--force", "--verify", "--min-cosine", "0.9999", "--json"])
            XCTAssertEqual(json.status, 1, command)
            let report = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
            let verify = try XCTUnwrap(report["verify"] as? [String: Any])
            XCTAssertEqual(verify["passed"] as? Bool, false)
            XCTAssertEqual((verify["thresholds"] as? [String: Any])?["min_cosine"] as? Double, 0.9999)
            XCTAssertFalse((verify["failures"] as! [Any]).isEmpty)

            let loose = try runQConv([command, sample, directory.file("s.qc"), "--force", "--verify",
                                      "--max-rel-rmse", "0.5", "--min-cosine", "0.9", "--min-sqnr", "5", "--quiet"])
            XCTAssertEqual(loose.status, 0, "\(command): \(loose.stderr)")
            XCTAssertEqual(loose.stderr, "")
        }
    }

    /// `dequant --dtype f16` and `--dtype bf16` of 4-bit containers: each value
    /// is the float32 dequantization rounded once, to nearest, ties to even
    /// (half subnormals included).
    func testDequantToHalfAndBFloat16RoundsTheFloat32ValuesOnce() throws {
        let directory = TemporaryDirectory()
        writeTensors(directory.file("in.safetensors"), [
            ("small", [4, 64], randomValues(256, scale: 2e-5, seed: 11)),   // FP16 subnormals
            ("medium", [8, 64], randomValues(512, scale: 0.05, seed: 12)),
            ("large", [2, 96], randomValues(192, scale: 3000, seed: 13)),
        ])
        /// float32 -> bfloat16 bits, to nearest, ties to even (finite inputs).
        func bfloat16Bits(_ value: Float) -> UInt16 {
            let bits = value.bitPattern
            return UInt16((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16)
        }
        func halfBits(_ tensor: Checkpoint.Tensor) throws -> [UInt16] {
            try tensor.stored.allBytes().withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)).map(UInt16.init(littleEndian:)) }
        }
        for command in ["to-nf4", "to-fp4"] {
            let container = directory.file("\(command).qc")
            XCTAssertEqual(try runQConv([command, directory.file("in.safetensors"), container, "--all", "--force", "--quiet"]).status, 0)
            var outputs: [String: Checkpoint] = [:]
            for dtype in ["f32", "f16", "bf16"] {
                let path = directory.file("\(command)-\(dtype).safetensors")
                let result = try runQConv(["dequant", container, path, "--dtype", dtype, "--force", "--quiet"])
                XCTAssertEqual(result.status, 0, result.stderr)
                outputs[dtype] = try Checkpoint(path: path)
            }
            var roundedAway = 0
            for name in ["small", "medium", "large"] {
                let reference = try outputs["f32"]!.tensor(named: name)!.stored.allFloats()
                let half = try XCTUnwrap(outputs["f16"]!.tensor(named: name))
                let bfloat = try XCTUnwrap(outputs["bf16"]!.tensor(named: name))
                XCTAssertEqual(half.info.dtype, .f16)
                XCTAssertEqual(bfloat.info.dtype, .bf16)
                XCTAssertEqual(try halfBits(half), reference.map { Float16($0).bitPattern }, "\(command) \(name): f16")
                XCTAssertEqual(try halfBits(bfloat), reference.map(bfloat16Bits), "\(command) \(name): bf16")
                // Truncation would differ from rounding on about half of these values.
                roundedAway += reference.filter { UInt16($0.bitPattern >> 16) != bfloat16Bits($0) }.count
            }
            XCTAssertGreaterThan(roundedAway, 100, command)
            let subnormals = try outputs["f32"]!.tensor(named: "small")!.stored.allFloats().filter { $0 != 0 && abs($0) < 6.103515625e-5 }
            XCTAssertGreaterThan(subnormals.count, 100, "values in FP16's subnormal range")
        }
    }
}
