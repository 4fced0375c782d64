import XCTest
import QConvKit
import QConvTestSupport

/// The merge arithmetic on small hand-computed matrices, the fit checks, and
/// the float-buffer API, through crafted adapters and bases.
final class LoRAMergeTests: XCTestCase {
    typealias Tensor = (name: String, dtype: DType, shape: [Int], values: [Float])

    private var folder: TemporaryDirectory!

    override func setUp() { folder = TemporaryDirectory("qconv-lora") }
    override func tearDown() { folder = nil }

    // MARK: - Crafting

    /// A safetensors file of float tensors.
    private func writeTensors(_ path: String, _ tensors: [Tensor], raw: [String: [UInt8]] = [:]) throws {
        let infos = tensors.map { TensorInfo(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let writer = try CheckpointWriter(destination: path, layout: .file, tensors: infos, metadata: [("format", "pt")], overwrite: true, inputs: [])
        for (tensor, info) in zip(tensors, infos) {
            var bytes = raw[info.name] ?? [UInt8](repeating: 0, count: info.byteCount)
            if raw[info.name] == nil {
                tensor.values.withUnsafeBufferPointer { source in
                    bytes.withUnsafeMutableBytes { FloatConversion.encode(source.baseAddress!, count: source.count, as: info.dtype, into: $0.baseAddress!) }
                }
            }
            try bytes.withUnsafeBytes { try writer.write($0) }
        }
        try writer.commit()
    }

    /// An adapter folder; tensor names get the `base_model.model.` prefix.
    private func makeAdapter(_ config: String, _ tensors: [Tensor]) throws -> LoRAAdapter {
        let path = folder.file("adapter")
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: path + "/adapter_config.json", contents: Data(config.utf8))
        try writeTensors(path + "/adapter_model.safetensors", tensors.map { ("base_model.model." + $0.name, $0.dtype, $0.shape, $0.values) })
        return try LoRAAdapter(path: path)
    }

    private func makeBase(_ tensors: [Tensor], raw: [String: [UInt8]] = [:]) throws -> Checkpoint {
        let path = folder.file("base.safetensors")
        try writeTensors(path, tensors, raw: raw)
        return try Checkpoint(path: path)
    }

    /// Merges to a file and returns every output tensor as floats.
    private func merge(_ config: String, adapter: [Tensor], base: [Tensor], scale: Double = 1, allowNonfinite: Bool = false) throws -> [String: [Float]] {
        let checkpoint = try makeBase(base)
        let loaded = try makeAdapter(config, adapter)
        var options = LoRAMergeOptions()
        options.scale = scale
        options.allowNonfinite = allowNonfinite
        options.threads = 2
        options.overwrite = true
        let output = folder.file("merged.safetensors")
        try LoRAMerger.merge(base: checkpoint, adapter: loaded, to: output, options: options)
        let merged = try Checkpoint(path: output)
        var result: [String: [Float]] = [:]
        for tensor in merged.tensors { result[tensor.name] = try tensor.stored.allFloats() }
        return result
    }

    private func fitProblems(_ body: () throws -> Void) -> [LoRAFitProblem] {
        do {
            try body()
            XCTFail("expected adapterDoesNotFitBase")
        } catch LoRAMergeError.adapterDoesNotFitBase(_, _, _, let problems) {
            return problems
        } catch {
            XCTFail("unexpected error \(error)")
        }
        return []
    }

    private let r1 = #"{"peft_type": "LORA", "r": 1, "lora_alpha": 2}"#

    // MARK: - Arithmetic

    func testLinear() throws {
        // s = 2, B @ A = [[1, 0, -1], [2, 0, -2]]
        let out = try merge(r1, adapter: [
            ("proj.lora_A.weight", .f32, [1, 3], [1, 0, -1]),
            ("proj.lora_B.weight", .f32, [2, 1], [1, 2]),
        ], base: [("proj.weight", .f32, [2, 3], [1, 2, 3, 4, 5, 6]), ("other.weight", .f32, [2], [7, 8])])
        XCTAssertEqual(out["proj.weight"], [3, 2, 1, 8, 5, 2])
        XCTAssertEqual(out["other.weight"], [7, 8])
    }

    func testScaleMultiplierAndRSLoRA() throws {
        let adapter: [Tensor] = [
            ("proj.lora_A.weight", .f16, [4, 2], [1, 0, 0, 0, 0, 0, 0, 0]),
            ("proj.lora_B.weight", .bf16, [1, 4], [1, 0, 0, 0]),
        ]
        let base: [Tensor] = [("proj.weight", .f32, [1, 2], [0, 0])]
        let plain = #"{"peft_type": "LORA", "r": 4, "lora_alpha": 4}"#
        XCTAssertEqual(try merge(plain, adapter: adapter, base: base)["proj.weight"], [1, 0])
        XCTAssertEqual(try merge(plain, adapter: adapter, base: base, scale: 0.5)["proj.weight"], [0.5, 0])
        let rs = #"{"peft_type": "LORA", "r": 4, "lora_alpha": 4, "use_rslora": true}"#
        XCTAssertEqual(try merge(rs, adapter: adapter, base: base)["proj.weight"], [2, 0], "alpha / sqrt(r)")
    }

    func testRankPatternDecidesScale() throws {
        let config = #"{"peft_type": "LORA", "r": 4, "lora_alpha": 4, "rank_pattern": {"b": 2}, "alpha_pattern": {"a": 8}}"#
        let out = try merge(config, adapter: [
            ("a.lora_A.weight", .f32, [4, 1], [1, 0, 0, 0]), ("a.lora_B.weight", .f32, [1, 4], [1, 0, 0, 0]),
            ("b.lora_A.weight", .f32, [2, 1], [1, 0]), ("b.lora_B.weight", .f32, [1, 2], [1, 0]),
        ], base: [("a.weight", .f32, [1, 1], [0]), ("b.weight", .f32, [1, 1], [0])])
        XCTAssertEqual(out["a.weight"], [2], "alpha 8 / r 4")
        XCTAssertEqual(out["b.weight"], [2], "alpha 4 / r 2")
    }

    func testFanInFanOut() throws {
        // Conv1D weights are [in, out]: W += s * (B @ A)^T
        let config = #"{"peft_type": "LORA", "r": 1, "lora_alpha": 1, "fan_in_fan_out": true}"#
        let out = try merge(config, adapter: [
            ("c_attn.lora_A.weight", .f32, [1, 3], [1, 2, 3]),
            ("c_attn.lora_B.weight", .f32, [2, 1], [1, -1]),
        ], base: [("c_attn.weight", .f32, [3, 2], [0, 0, 0, 0, 0, 0])])
        XCTAssertEqual(out["c_attn.weight"], [1, -1, 2, -2, 3, -3])
    }

    func testEmbedding() throws {
        // lora_embedding_A [r, vocab], lora_embedding_B [dim, r]: W[vocab, dim] += s * (B @ A)^T
        let config = #"{"peft_type": "LORA", "r": 1, "lora_alpha": 1}"#
        let out = try merge(config, adapter: [
            ("embed.lora_embedding_A", .f32, [1, 3], [1, 2, 3]),
            ("embed.lora_embedding_B", .f32, [2, 1], [1, -1]),
        ], base: [("embed.weight", .f32, [3, 2], [0, 0, 0, 0, 0, 0])])
        XCTAssertEqual(out["embed.weight"], [1, -1, 2, -2, 3, -3])
    }

    func testEmbeddingDeltaIsRoundedBeforeTheAddButLinearIsNot() throws {
        // d = 2^-11 + 2^-22: F16(1 + d) = 1 + 2^-10, but F16(d) = 2^-11 and
        // 1 + 2^-11 is a tie that rounds to 1. PEFT's Embedding.merge rounds
        // the delta to the weight's dtype first; Linear.merge does not.
        let d = Float(1.0 / 2048 + 1.0 / 4_194_304)
        let config = #"{"peft_type": "LORA", "r": 1, "lora_alpha": 1}"#
        let out = try merge(config, adapter: [
            ("embed.lora_embedding_A", .f32, [1, 1], [1]), ("embed.lora_embedding_B", .f32, [1, 1], [d]),
            ("proj.lora_A.weight", .f32, [1, 1], [1]), ("proj.lora_B.weight", .f32, [1, 1], [d]),
        ], base: [("embed.weight", .f16, [1, 1], [1]), ("proj.weight", .f16, [1, 1], [1])])
        XCTAssertEqual(out["embed.weight"], [1])
        XCTAssertEqual(out["proj.weight"], [1 + 1.0 / 1024])
    }

    func testDoRARowNorms() throws {
        // V = W + s B A = [4, 4]; W' = m / ||V|| * V
        let config = #"{"peft_type": "LORA", "r": 1, "lora_alpha": 1, "use_dora": true}"#
        let out = try merge(config, adapter: [
            ("proj.lora_A.weight", .f32, [1, 2], [1, 0]), ("proj.lora_B.weight", .f32, [1, 1], [1]),
            ("proj.lora_magnitude_vector", .f32, [1], [8]),
        ], base: [("proj.weight", .f32, [1, 2], [3, 4])])
        let factor = Float(8) / Float(32.0.squareRoot())
        XCTAssertEqual(out["proj.weight"], [4 * factor, 4 * factor])
    }

    func testDoRAColumnNormsForFanInFanOutAndEmbeddings() throws {
        // Norms per output feature: columns of a [in, out] weight. Zero delta: W' = m / ||W col|| * W.
        let config = #"{"peft_type": "LORA", "r": 1, "lora_alpha": 1, "use_dora": true, "fan_in_fan_out": true}"#
        let out = try merge(config, adapter: [
            ("c_fc.lora_A.weight", .f32, [1, 2], [0, 0]), ("c_fc.lora_B.weight", .f32, [2, 1], [0, 0]),
            ("c_fc.lora_magnitude_vector", .f32, [2], [10, 1]),
            ("wte.lora_embedding_A", .f32, [1, 2], [0, 0]), ("wte.lora_embedding_B", .f32, [2, 1], [0, 0]),
            ("wte.lora_magnitude_vector", .f32, [2], [10, 1]),
        ], base: [("c_fc.weight", .f32, [2, 2], [3, 1, 4, 0]), ("wte.weight", .f32, [2, 2], [3, 1, 4, 0])])
        XCTAssertEqual(out["c_fc.weight"], [6, 1, 8, 0])
        XCTAssertEqual(out["wte.weight"], [6, 1, 8, 0])
    }

    func testLoRABiasAndReplacedBias() throws {
        // bias "all" + lora_bias: base_layer.bias replaces the bias, then s * lora_B.bias is added.
        let config = #"{"peft_type": "LORA", "r": 1, "lora_alpha": 2, "lora_bias": true, "bias": "all"}"#
        let out = try merge(config, adapter: [
            ("proj.lora_A.weight", .f32, [1, 2], [0, 0]), ("proj.lora_B.weight", .f32, [2, 1], [0, 0]),
            ("proj.lora_B.bias", .f32, [2], [0.5, -0.5]),
            ("proj.base_layer.bias", .f32, [2], [1, 1]),
            ("norm.bias", .f32, [2], [3, 4]),
        ], base: [("proj.weight", .f32, [2, 2], [1, 2, 3, 4]), ("proj.bias", .f32, [2], [9, 9]), ("norm.bias", .f32, [2], [0, 0])])
        XCTAssertEqual(out["proj.weight"], [1, 2, 3, 4])
        XCTAssertEqual(out["proj.bias"], [2, 0])
        XCTAssertEqual(out["norm.bias"], [3, 4])
    }

    func testModulesToSaveAndResizedEmbedding() throws {
        // A whole lm_head replaces the base's (rounded to its dtype); a resized
        // base_layer.weight changes the tensor's shape, and the embedding delta applies on top.
        let config = #"{"peft_type": "LORA", "r": 1, "lora_alpha": 1, "modules_to_save": ["lm_head"]}"#
        let out = try merge(config, adapter: [
            ("lm_head.weight", .f32, [2, 1], [0.1, 0.2]),
            ("embed.base_layer.weight", .f32, [3, 1], [1, 2, 3]),
            ("embed.lora_embedding_A", .f32, [1, 3], [1, 0, 0]), ("embed.lora_embedding_B", .f32, [1, 1], [10]),
        ], base: [("embed.weight", .bf16, [2, 1], [0, 0]), ("lm_head.weight", .bf16, [2, 1], [0, 0])])
        XCTAssertEqual(out["lm_head.weight"], [0.1, 0.2].map { FloatConversion.float(fromBFloat16: FloatConversion.bfloat16Bits(from: $0)) })
        XCTAssertEqual(out["embed.weight"], [11, 2, 3])
    }

    func testOneByOneConvolution() throws {
        let out = try merge(r1, adapter: [
            ("conv.lora_A.weight", .f32, [1, 3, 1, 1], [1, 0, -1]),
            ("conv.lora_B.weight", .f32, [2, 1, 1, 1], [1, 2]),
        ], base: [("conv.weight", .f32, [2, 3, 1, 1], [1, 2, 3, 4, 5, 6])])
        XCTAssertEqual(out["conv.weight"], [3, 2, 1, 8, 5, 2])
    }

    // MARK: - The float-buffer API

    func testRowRangesGiveTheWholeTensorsResult() throws {
        // 9 rows x 11 columns exercises the 4-row blocks, single rows and the tails of 8-wide vectors.
        let rows = 9, columns = 11, rank = 3
        func pattern(_ n: Int, _ k: Float) -> [Float] { (0..<n).map { Float(($0 * 7) % 13) * k - 0.3 } }
        let config = #"{"peft_type": "LORA", "r": 3, "lora_alpha": 5}"#
        let adapter = try makeAdapter(config, [
            ("proj.lora_A.weight", .f32, [rank, columns], pattern(rank * columns, 0.11)),
            ("proj.lora_B.weight", .f32, [rows, rank], pattern(rows * rank, 0.07)),
        ])
        let info = TensorInfo(name: "proj.weight", dtype: .f32, shape: [rows, columns])
        let plan = try LoRAMergePlan(adapter: adapter, baseTensors: [info], baseDescription: "test")
        let change = try XCTUnwrap(plan.change(for: "proj.weight"))
        XCTAssertEqual(change.kind, .linear)
        XCTAssertEqual(change.rank, 3)
        XCTAssertEqual(change.scale, 5.0 / 3)
        let prepared = try plan.prepare(change)
        XCTAssertFalse(prepared.requiresWholeTensor)

        let base = pattern(rows * columns, 0.5)
        var whole = base
        try whole.withUnsafeMutableBufferPointer { try prepared.applyToWholeTensor($0.baseAddress!, threads: 2) }
        var pieces = base
        pieces.withUnsafeMutableBufferPointer { values in
            for range in [0..<1, 1..<6, 6..<9] { prepared.apply(to: values.baseAddress! + range.lowerBound * columns, rows: range) }
        }
        XCTAssertEqual(whole, pieces)
        // Against the definition, in double precision.
        let a = pattern(rank * columns, 0.11), b = pattern(rows * rank, 0.07)
        for i in 0..<rows {
            for j in 0..<columns {
                var sum = 0.0
                for k in 0..<rank { sum += Double(b[i * rank + k]) * Double(a[k * columns + j]) }
                XCTAssertEqual(Double(whole[i * columns + j]), Double(base[i * columns + j]) + 5.0 / 3 * sum, accuracy: 1e-5)
            }
        }
    }

    func testLargeTensorsStreamInBatches() throws {
        // Several 2 MB batches, 4-row blocks with leftover rows and columns,
        // and DoRA norms across rows, against the definitions in double precision.
        func pattern(_ n: Int, _ k: Float) -> [Float] { (0..<n).map { Float(($0 * 7919) % 1013) * k - 0.5 * k * 1013 } }
        let (inFeatures, outFeatures, rank) = (601, 1003, 2)
        let config = #"{"peft_type": "LORA", "r": 2, "lora_alpha": 3, "use_dora": true, "fan_in_fan_out": true}"#
        let a = pattern(rank * inFeatures, 1e-4), b = pattern(outFeatures * rank, 2e-4), m = pattern(outFeatures, 1e-3).map { abs($0) + 1 }
        let w = pattern(inFeatures * outFeatures, 1e-3)
        let out = try merge(config, adapter: [
            ("c_fc.lora_A.weight", .f32, [rank, inFeatures], a), ("c_fc.lora_B.weight", .f32, [outFeatures, rank], b),
            ("c_fc.lora_magnitude_vector", .f32, [outFeatures], m),
        ], base: [("c_fc.weight", .f32, [inFeatures, outFeatures], w)])
        let merged = try XCTUnwrap(out["c_fc.weight"])
        var expected = [Double](repeating: 0, count: w.count)
        var norms = [Double](repeating: 0, count: outFeatures)
        for i in 0..<inFeatures {
            for o in 0..<outFeatures {
                var delta = 0.0
                for k in 0..<rank { delta += Double(b[o * rank + k]) * Double(a[k * inFeatures + i]) }
                let v = Double(w[i * outFeatures + o]) + 1.5 * delta
                expected[i * outFeatures + o] = v
                norms[o] += v * v
            }
        }
        for i in 0..<inFeatures { for o in 0..<outFeatures { expected[i * outFeatures + o] *= Double(m[o]) / norms[o].squareRoot() } }
        let absmax = expected.reduce(0) { max($0, abs($1)) }
        let worst = zip(merged, expected).reduce(0.0) { max($0, abs(Double($1.0) - $1.1)) }
        XCTAssertLessThan(worst / absmax, 1e-6)

        // Plain LoRA on a [rows, 1003] F16 weight, in several batches.
        let rows = 1203
        let plain = #"{"peft_type": "LORA", "r": 2, "lora_alpha": 2}"#
        let b2 = pattern(rows * rank, 2e-4)
        let w2 = pattern(rows * outFeatures, 1e-4)
        let out2 = try merge(plain, adapter: [
            ("proj.lora_A.weight", .f32, [rank, outFeatures], pattern(rank * outFeatures, 1e-3)), ("proj.lora_B.weight", .f32, [rows, rank], b2),
        ], base: [("proj.weight", .f16, [rows, outFeatures], w2)])
        let a2 = pattern(rank * outFeatures, 1e-3)
        let merged2 = try XCTUnwrap(out2["proj.weight"])
        var differing = 0
        for r in 0..<rows {
            for c in 0..<outFeatures {
                var delta: Float = 0
                for k in 0..<rank { delta += b2[r * rank + k] * a2[k * outFeatures + c] }
                let base = FloatConversion.float(fromHalf: FloatConversion.halfBits(from: w2[r * outFeatures + c]))
                let value = FloatConversion.float(fromHalf: FloatConversion.halfBits(from: base + delta))
                if value != merged2[r * outFeatures + c] { differing += 1 }
            }
        }
        XCTAssertEqual(differing, 0, "the same float32 arithmetic, rounded once")
    }

    // MARK: - Refusals

    func testMisShapedFactorsAreListed() throws {
        let adapter = try makeAdapter(r1, [
            ("a.lora_A.weight", .f32, [1, 3], [0, 0, 0]), ("a.lora_B.weight", .f32, [3, 1], [0, 0, 0]),
            ("b.lora_A.weight", .f32, [1, 4], [0, 0, 0, 0]), ("b.lora_B.weight", .f32, [2, 1], [0, 0]),
            ("c.lora_A.weight", .f32, [2, 3], [0, 0, 0, 0, 0, 0]), ("c.lora_B.weight", .f32, [2, 2], [0, 0, 0, 0]),
            ("gone.lora_A.weight", .f32, [1, 3], [0, 0, 0]), ("gone.lora_B.weight", .f32, [2, 1], [0, 0]),
        ])
        let infos = ["a", "b", "c"].map { TensorInfo(name: "\($0).weight", dtype: .f32, shape: [2, 3]) }
        let problems = fitProblems { _ = try LoRAMergePlan(adapter: adapter, baseTensors: infos, baseDescription: "base") }
        XCTAssertEqual(problems.count, 4, "\(problems)")
        XCTAssertTrue(problems.contains { if case .shapeMismatch("base_model.model.a.lora_B.weight", [3, 1], "a.weight", [2, 3], _) = $0 { return true }; return false })
        XCTAssertTrue(problems.contains { if case .shapeMismatch("base_model.model.b.lora_A.weight", [1, 4], "b.weight", [2, 3], _) = $0 { return true }; return false })
        XCTAssertTrue(problems.contains { if case .rankMismatch("base_model.model.c.lora_A.weight", [2, 3], 1) = $0 { return true }; return false })
        XCTAssertTrue(problems.contains { if case .noBaseTensor("base_model.model.gone.lora_A.weight", "gone.weight") = $0 { return true }; return false })
        let message = LoRAMergeError.adapterDoesNotFitBase(adapter: "A", base: "B", mapping: "identity", problems: problems).description
        XCTAssertTrue(message.contains("lora_B is [out, r]"), message)
    }

    func testUnsupportedShapesAndDTypes() throws {
        let adapter = try makeAdapter(r1, [
            ("conv.lora_A.weight", .f32, [1, 2, 3, 3], [Float](repeating: 0, count: 18)),
            ("conv.lora_B.weight", .f32, [2, 1, 1, 1], [0, 0]),
            ("wide.lora_A.weight", .f32, [1, 2], [0, 0]), ("wide.lora_B.weight", .f32, [2, 1], [0, 0]),
        ])
        let problems = fitProblems {
            _ = try LoRAMergePlan(adapter: adapter, baseTensors: [
                TensorInfo(name: "conv.weight", dtype: .f32, shape: [2, 2, 3, 3]),
                TensorInfo(name: "wide.weight", dtype: .f64, shape: [2, 2]),
            ], baseDescription: "base")
        }
        XCTAssertEqual(problems, [
            .unsupportedConvKernel(baseTensor: "conv.weight", shape: [2, 2, 3, 3]),
            .unsupportedBaseDType(baseTensor: "wide.weight", dtype: .f64),
        ])
    }

    func testAdapterRefusals() throws {
        func refusal(_ config: String, _ tensors: [Tensor]) -> LoRAMergeError? {
            do { _ = try makeAdapter(config, tensors); return nil } catch { return error as? LoRAMergeError }
        }
        let a: Tensor = ("p.lora_A.weight", .f32, [1, 1], [0])
        let b: Tensor = ("p.lora_B.weight", .f32, [1, 1], [0])
        guard case .incompleteModule(_, "p", _)? = refusal(r1, [a]) else { return XCTFail("lora_A without lora_B") }
        guard case .unexpectedTensor? = refusal(r1, [a, b, ("p.lora_magnitude_vector", .f32, [1], [1])]) else { return XCTFail("magnitude without use_dora") }
        guard case .incompleteModule? = refusal(#"{"peft_type": "LORA", "use_dora": true}"#, [a, b]) else { return XCTFail("use_dora without magnitude") }
        guard case .unexpectedTensor? = refusal(r1, [a, b, ("p.lora_B.bias", .f32, [1], [1])]) else { return XCTFail("lora_B.bias without lora_bias") }
        guard case .unknownTensorKind(_, "base_model.model.p.lora_A.default.weight")? = refusal(r1, [("p.lora_A.default.weight", .f32, [1, 1], [0])]) else {
            return XCTFail("adapter name left in the key")
        }
        guard case .conflictingTensors? = refusal(r1, [a, b, ("p.base_layer.lora_A.weight", .f32, [1, 1], [0])]) else { return XCTFail("two lora_A") }
        try FileManager.default.createDirectory(atPath: folder.file("empty"), withIntermediateDirectories: true)
        XCTAssertThrowsError(try LoRAAdapter(path: folder.file("empty"))) { XCTAssertEqual($0 as? LoRAMergeError, .configMissing(folder: self.folder.file("empty"))) }
    }

    func testNonFiniteResultsAreRefusedAfterRounding() throws {
        // 60000 + 10000 is finite in float32 but overflows F16.
        let config = #"{"peft_type": "LORA", "r": 1, "lora_alpha": 1}"#
        let adapter: [Tensor] = [("p.lora_A.weight", .f32, [1, 1], [1]), ("p.lora_B.weight", .f32, [1, 1], [10000])]
        let base: [Tensor] = [("p.weight", .f16, [1, 1], [60000])]
        XCTAssertThrowsError(try merge(config, adapter: adapter, base: base)) { error in
            XCTAssertEqual(error as? LoRAMergeError, .nonFiniteResult(tensor: "p.weight", count: 1))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder.file("merged.safetensors")))
        XCTAssertEqual(try merge(config, adapter: adapter, base: base, allowNonfinite: true)["p.weight"], [.infinity])
    }
}
