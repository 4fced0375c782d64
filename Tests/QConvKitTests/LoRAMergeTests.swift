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
        _ = FileManager.default.createFile(atPath: path + "/adapter_config.json", contents: Data(config.utf8))
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
        try LoRAMerger.merge(base: try SafeTensorsReader.model(of: checkpoint), adapter: loaded, to: output, options: options)
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

    func testShardedBaseKeepsItsIndexMetadataAndUpdatesTheTotals() throws {
        // A sharded base whose index carries an extra metadata key; the adapter
        // grows the vocabulary (base_layer.weight), so total_size changes.
        let embed = TensorInfo(name: "embed.weight", dtype: .f32, shape: [2, 2])
        let proj = TensorInfo(name: "proj.weight", dtype: .f32, shape: [2, 2])
        let base = folder.file("base")
        let writer = try CheckpointWriter(destination: base, layout: .folder(shards: [("model-00001-of-00002.safetensors", [embed]),
                                                                                      ("model-00002-of-00002.safetensors", [proj])]),
                                          tensors: [embed, proj], metadata: [("format", "pt")], overwrite: false, inputs: [])
        try [Float](repeating: 1, count: 8).withUnsafeBytes { try writer.write($0) }
        try writer.commit()
        let indexPath = base + "/model.safetensors.index.json"
        let original = try String(contentsOfFile: indexPath, encoding: .utf8)
        try original.replacingOccurrences(of: "\"metadata\": {", with: "\"metadata\": {\n    \"quantization\": \"none\",")
            .write(toFile: indexPath, atomically: true, encoding: .utf8)

        let adapter = try makeAdapter(#"{"peft_type": "LORA", "r": 1, "lora_alpha": 1}"#, [
            ("embed.base_layer.weight", .f32, [3, 2], [1, 2, 3, 4, 5, 6]),
            ("proj.lora_A.weight", .f32, [1, 2], [1, 0]), ("proj.lora_B.weight", .f32, [2, 1], [1, 1]),
        ])
        let out = folder.file("out")
        try LoRAMerger.merge(base: try Model.open(base), adapter: adapter, to: out)
        let merged = try Checkpoint(path: out)
        XCTAssertEqual(merged.tensor(named: "embed.weight")?.info.shape, [3, 2])
        XCTAssertEqual(try merged.tensor(named: "embed.weight")?.stored.allFloats(), [1, 2, 3, 4, 5, 6])
        let metadata = try XCTUnwrap(merged.index?["metadata"]?.objectValue)
        XCTAssertEqual(metadata.keys, ["quantization", "total_parameters", "total_size"])
        XCTAssertEqual(metadata["quantization"], .string("none"))
        XCTAssertEqual(metadata["total_size"]?.numberValue?.intValue, 40)
        XCTAssertEqual(metadata["total_parameters"]?.numberValue?.intValue, 10)
    }

    // MARK: - The float-buffer API

    /// An adapter whose module names carry a `model.` the base lacks, next to
    /// one (`lm_head`) that both spell alike: the mapping removes the prefix,
    /// and the name without it is looked up as it is.
    func testPrefixMappingKeepsNamesWithoutThePrefix() throws {
        let adapter = try makeAdapter(r1, [
            ("model.layers.0.q_proj.lora_A.weight", .f32, [1, 3], [1, 0, -1]), ("model.layers.0.q_proj.lora_B.weight", .f32, [2, 1], [1, 2]),
            ("lm_head.lora_A.weight", .f32, [1, 3], [1, 0, -1]), ("lm_head.lora_B.weight", .f32, [2, 1], [1, 2]),
        ])
        let infos = ["layers.0.q_proj.weight", "lm_head.weight"].map { TensorInfo(name: $0, dtype: .f32, shape: [2, 3]) }
        let plan = try LoRAMergePlan(adapter: adapter, baseTensors: infos, baseDescription: "test")
        XCTAssertNotNil(plan.change(for: "layers.0.q_proj.weight"))
        XCTAssertNotNil(plan.change(for: "lm_head.weight"))
    }

    func testRowRangesGiveTheWholeTensorsResult() throws {
        // 9 rows x 37 columns exercises the 4-row blocks (two 16-column
        // panels and a tail), single rows (8-wide vectors and a tail), bit for bit alike.
        let rows = 9, columns = 37, rank = 3
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

    /// Serves float values from memory, recording ranges that do not start at
    /// its alignment (as a container decoder would refuse them).
    private final class AlignedSource: FloatTensorSource, @unchecked Sendable {
        let info: TensorInfo
        let values: [Float]
        let alignment: Int
        private let lock = NSLock()
        private(set) var misaligned: [Range<Int>] = []
        private(set) var elementsRead = 0

        init(info: TensorInfo, values: [Float], alignment: Int) {
            self.info = info
            self.values = values
            self.alignment = alignment
        }

        func scratchBytes(for count: Int) -> Int { 0 }

        func readFloats(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutableRawBufferPointer) throws {
            lock.lock()
            if range.lowerBound % alignment != 0 { misaligned.append(range) }
            elementsRead += range.count
            lock.unlock()
            values.withUnsafeBufferPointer { destination.update(from: $0.baseAddress! + range.lowerBound, count: range.count) }
        }
    }

    /// Reads a source whole, in aligned pieces of `piece` alignment units.
    private func readAll(_ source: FloatTensorSource, piece: Int) throws -> [Float] {
        let n = source.info.elementCount
        var result = [Float](repeating: .nan, count: n)
        let step = source.alignment * piece
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, source.scratchBytes(for: step)), alignment: 64)
        defer { scratch.deallocate() }
        try result.withUnsafeMutableBufferPointer { out in
            for start in stride(from: 0, to: n, by: step) {
                try source.readFloats(start..<min(n, start + step), into: out.baseAddress! + start, scratch: scratch)
            }
        }
        return result
    }

    /// DoRA with norms across rows streams: a first pass sums the column
    /// squares, each read merges its rows; the bits equal the whole-tensor
    /// merge whatever the thread count and the base's alignment, and no
    /// whole tensor is held. A replacement is streamed from the adapter too.
    func testDoRAAcrossRowsAndReplacementsStream() throws {
        func pattern(_ n: Int, _ k: Float) -> [Float] { (0..<n).map { Float(($0 * 7919) % 1013) * k - 0.5 * k * 1013 } }
        // 20000 rows of 64: norm blocks of 1024 rows, two norm-pass reads of 16 blocks.
        let (rows, columns, rank) = (20000, 64, 2)
        let config = #"{"peft_type": "LORA", "r": 2, "lora_alpha": 3, "use_dora": true, "fan_in_fan_out": true}"#
        let adapter = try makeAdapter(config, [
            ("c_fc.lora_A.weight", .f32, [rank, rows], pattern(rank * rows, 1e-4)),
            ("c_fc.lora_B.weight", .f32, [columns, rank], pattern(columns * rank, 2e-4)),
            ("c_fc.lora_magnitude_vector", .f32, [columns], pattern(columns, 1e-3).map { abs($0) + 1 }),
            // A grown embedding with DoRA: the replacement is rounded to BF16 first.
            ("wte.base_layer.weight", .f32, [rows, columns], pattern(rows * columns, 3e-4)),
            ("wte.lora_embedding_A", .f32, [rank, rows], pattern(rank * rows, 1e-4)),
            ("wte.lora_embedding_B", .f32, [columns, rank], pattern(columns * rank, 2e-4)),
            ("wte.lora_magnitude_vector", .f32, [columns], pattern(columns, 1e-3).map { abs($0) + 1 }),
        ])
        let fc = TensorInfo(name: "c_fc.weight", dtype: .f32, shape: [rows, columns])
        let wte = TensorInfo(name: "wte.weight", dtype: .bf16, shape: [rows - 1, columns])
        let plan = try LoRAMergePlan(adapter: adapter, baseTensors: [fc, wte], baseDescription: "test")
        let baseValues = pattern(rows * columns, 1e-3)
        for (info, baseRows) in [(fc, rows), (wte, rows - 1)] {
            let change = try XCTUnwrap(plan.change(for: info.name))
            XCTAssertTrue(change.requiresWholeTensor, info.name)
            XCTAssertEqual(try plan.prepare(change).normBlockRows, 1024)
            var whole = Array(baseValues.prefix(baseRows * columns)) + [Float](repeating: 0, count: (rows - baseRows) * columns)
            try whole.withUnsafeMutableBufferPointer { try plan.prepare(change).applyToWholeTensor($0.baseAddress!, threads: 2) }
            for (threads, alignment) in [(1, 1), (3, 96), (2, 4096 * 3)] {
                let base = AlignedSource(info: info, values: Array(baseValues.prefix(baseRows * columns)), alignment: alignment)
                let source = try MergedTensorSource(base: base, prepared: try plan.prepare(change, decodeReplacement: false), threads: threads)
                XCTAssertEqual(source.alignment % columns, 0)
                if change.replacement == nil { XCTAssertEqual(source.alignment % alignment, 0) }
                let streamed = try readAll(source, piece: 37)
                XCTAssertEqual(streamed.map(\.bitPattern), whole.map(\.bitPattern), "\(info.name), \(threads) threads, alignment \(alignment)")
                XCTAssertEqual(base.misaligned, [], info.name)
                // The base is read twice (norm pass, then the merge), or not at all when replaced.
                XCTAssertEqual(base.elementsRead, change.replacement == nil ? 2 * rows * columns : 0, info.name)
            }
        }
        // Against the definition, for the replaced embedding: V = bf16(R) + s (B A)^T, W' = m / ||V col|| * V.
        let change = try XCTUnwrap(plan.change(for: "wte.weight"))
        let merged = try readAll(MergedTensorSource(base: AlignedSource(info: wte, values: [], alignment: 1),
                                                    prepared: try plan.prepare(change, decodeReplacement: false), threads: 2), piece: 1 << 16)
        let r = pattern(rows * columns, 3e-4).map { FloatConversion.float(fromBFloat16: FloatConversion.bfloat16Bits(from: $0)) }
        let a = pattern(rank * rows, 1e-4), b = pattern(columns * rank, 2e-4), m = pattern(columns, 1e-3).map { abs($0) + 1 }
        var v = [Double](repeating: 0, count: rows * columns), norms = [Double](repeating: 0, count: columns)
        for i in 0..<rows {
            for j in 0..<columns {
                var delta = 0.0
                for k in 0..<rank { delta += Double(b[j * rank + k]) * Double(a[k * rows + i]) }
                v[i * columns + j] = Double(r[i * columns + j]) + 1.5 * delta
                norms[j] += v[i * columns + j] * v[i * columns + j]
            }
        }
        var worst = 0.0
        for i in 0..<rows { for j in 0..<columns { worst = max(worst, abs(Double(merged[i * columns + j]) - v[i * columns + j] * Double(m[j]) / norms[j].squareRoot())) } }
        XCTAssertLessThan(worst, 1e-6)
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
        guard case .unknownTensorKind(_, "base_model.model.p.lora_A.weight.default")? = refusal(r1, [("p.lora_A.weight.default", .f32, [1, 1], [0])]) else {
            return XCTFail("a marker in an unknown arrangement")
        }
        guard case .severalAdapterNames(_, ["base_model.model.p.lora_A.one.weight", "base_model.model.p.lora_B.two.weight"])? =
                refusal(r1, [("p.lora_A.one.weight", .f32, [1, 1], [0]), ("p.lora_B.two.weight", .f32, [1, 1], [0])]) else {
            return XCTFail("two adapter names in one file")
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
