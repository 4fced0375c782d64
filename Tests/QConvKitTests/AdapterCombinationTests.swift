@testable import QConvKit
import Foundation
import QConvTestSupport
import XCTest

/// The pieces of PEFT's `add_weighted_adapter`: merge_utils' element-wise
/// rules, the magnitude selection, the DARE streams and their statistics.
final class AdapterCombinationTests: XCTestCase {
    // MARK: - merge_utils

    private func weightedSum(_ tasks: [[Float]], _ weights: [Float]) -> [Float] {
        var out = [Float](repeating: .nan, count: tasks[0].count)
        withPointers(tasks) { TaskArithmetic.weightedSum($0, weights: weights, count: out.count, into: &out) }
        return out
    }

    private func disjoint(_ tasks: [[Float]], _ weights: [Float], _ election: TaskArithmetic.SignElection) -> [Float] {
        var out = [Float](repeating: .nan, count: tasks[0].count)
        var scratch = [Float](repeating: .nan, count: 2 * out.count)
        withPointers(tasks) { TaskArithmetic.disjointMerge($0, weights: weights, count: out.count, election: election, scratch: &scratch, into: &out) }
        return out
    }

    func testTaskArithmeticSumsWeightedTasksInOrder() {
        XCTAssertEqual(weightedSum([[1, 2, -3], [4, -5, 6]], [0.5, 2]), [8.5, -9, 10.5])
        // Each product is rounded, then summed in task order (torch's stack * w, sum(0)).
        let big: Float = 16_777_216
        XCTAssertEqual(weightedSum([[big], [1], [1]], [1, 1, 1]), [big], "(2^24 + 1) + 1 rounds twice to 2^24")
    }

    /// `calculate_majority_sign_mask` + `disjoint_merge`, worked by hand.
    func testTiesElectsSignsAndAveragesTheWeightedAgreeingValues() {
        let tasks: [[Float]] = [[1, -2, 3, 0, -1], [-3, -1, 2, 0, 1], [1, 4, 0, 0, 1]]
        let weights: [Float] = [1, 2, 0.5]
        // total: sums -1, 1, 5, 0, 1 -> signs -, +, +, + (0 -> +), +.
        XCTAssertEqual(disjoint(tasks, weights, .total), [-6, 2, 3.5, 0, 1.25])
        // frequency: sign counts 1, -1, 2, 0, 1 -> +, -, +, +, +.
        XCTAssertEqual(disjoint(tasks, weights, .frequency), [0.75, -2, 3.5, 0, 1.25])
    }

    func testMagnitudeSelectionIsTheKthLargestMagnitude() {
        var state: UInt64 = 42
        for count in [1, 7, 1000, 70_001] {
            let values = (0..<count).map { _ -> Float in
                state = SplitMix64.mix(state)
                return Float(Int64(bitPattern: state) % 2_000_001) / 1000 - 1000 * Float(state & 1)
            }
            let sorted = values.map(abs).sorted(by: >)
            for density in [0.0, 0.01, 0.5, 0.6, 0.999, 1.0] {
                let k = Int(density * Double(count))
                let threshold = values.withUnsafeBufferPointer { MagnitudeSelection.threshold(of: $0, density: density) }
                XCTAssertEqual(threshold, k == 0 ? .infinity : sorted[k - 1], "count \(count), density \(density)")
                var pruned = values
                TaskArithmetic.prune(&pruned, count: count, keepingMagnitudesFrom: threshold)
                let kept = pruned.filter { $0 != 0 }.count
                XCTAssertEqual(kept, sorted.prefix(k).filter { $0 != 0 }.count + sorted.dropFirst(k).filter { $0 == threshold && $0 != 0 }.count)
                XCTAssertTrue(zip(values, pruned).allSatisfy { $1 == 0 || $1 == $0 })
            }
        }
    }

    // MARK: - DARE

    func testSplitMix64IsTheReferenceGenerator() {
        // The first outputs of Vigna's splitmix64.c seeded with 0 and with 1234567.
        XCTAssertEqual(SplitMix64.value(key: 0, index: 0), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(SplitMix64.value(key: 0, index: 1), 0x6E78_9E6A_A1B9_65F4)
        XCTAssertEqual(SplitMix64.value(key: 1_234_567, index: 0), 6_457_827_717_110_365_317)
        XCTAssertEqual(SplitMix64.value(key: 1_234_567, index: 1), 3_203_168_211_198_807_973)
        XCTAssertNotEqual(SplitMix64.key(seed: 0, label: "t:lora_A:0"), SplitMix64.key(seed: 0, label: "t:lora_A:1"))
        XCTAssertNotEqual(SplitMix64.key(seed: 0, label: "t:lora_A:0"), SplitMix64.key(seed: 1, label: "t:lora_A:0"))
    }

    /// `random_pruning(rescale=True)`: each element is kept with probability
    /// `density` (within 5 standard deviations over 200,000 draws) and then
    /// divided by it; the rest are 0. The draw of an element does not depend
    /// on where a range starts.
    func testRandomPruningKeepsTheDensityAndRescales() {
        let count = 200_000
        let values = (0..<count).map { Float($0 % 97) - 48.5 }
        for density in [0.1, 0.5, 0.9] {
            let key = SplitMix64.key(seed: 3, label: "stats")
            var pruned = values
            TaskArithmetic.randomPrune(&pruned, count: count, density: density, key: key, firstIndex: 0)
            let kept = zip(values, pruned).filter { $1 != 0 }
            let expected = density * Double(count), sigma = (Double(count) * density * (1 - density)).squareRoot()
            XCTAssertLessThan(abs(Double(kept.count) - expected), 5 * sigma, "density \(density): kept \(kept.count)")
            XCTAssertTrue(kept.allSatisfy { $1 == $0 / Float(density) }, "kept values are divided by the density")
            // The mean is preserved in expectation.
            let meanRatio = pruned.reduce(0.0) { $0 + Double(abs($1)) } / values.reduce(0.0) { $0 + Double(abs($1)) }
            XCTAssertEqual(meanRatio, 1, accuracy: 0.02)
            // Any range reproduces the whole's draws.
            var tail = Array(values[1000..<2000])
            TaskArithmetic.randomPrune(&tail, count: tail.count, density: density, key: key, firstIndex: 1000)
            XCTAssertEqual(tail, Array(pruned[1000..<2000]))
        }
    }

    /// A DARE merge through the runner: the same seed, the same factors.
    func testDARERunnerIsDeterministicPerSeedAndTask() {
        let tasks: [[Float]] = [(0..<4096).map { Float($0) + 1 }, (0..<4096).map { 1000 * (Float($0) + 1) }]
        func merged(_ seed: UInt64) -> [Float] {
            TaskMergeRunner(merge: .dareLinear(density: 0.3, seed: seed), tensor: "w", part: "lora_A", adapterIndices: [0, 1])
                .merged(tasks, weights: [1, 1])
        }
        XCTAssertEqual(merged(5), merged(5))
        XCTAssertNotEqual(merged(5), merged(6))
        // Each task keeps about 30%, independently of the other: which of
        // them survive shows in the merged value (t0 + 1000 t0 when both do).
        var outcomes: [Int: Int] = [:]
        for (value, first) in zip(merged(5), tasks[0]) { outcomes[Int((value * 0.3 / first).rounded()), default: 0] += 1 }
        XCTAssertEqual(Set(outcomes.keys), [0, 1, 1000, 1001])
        for (outcome, probability) in [(0, 0.49), (1, 0.21), (1000, 0.21), (1001, 0.09)] {
            XCTAssertEqual(Double(outcomes[outcome] ?? 0) / 4096, probability, accuracy: 0.03, "\(outcome)")
        }
    }

    // MARK: - The plan

    /// An adapter folder of F32 tensors (names get `base_model.model.`).
    private func adapter(_ folder: TemporaryDirectory, _ name: String, config: String, _ tensors: [(String, [Int])]) throws -> LoRAAdapter {
        let path = folder.file(name)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: path + "/adapter_config.json", contents: Data(config.utf8))
        let infos = tensors.map { TensorInfo(name: "base_model.model." + $0.0, dtype: .f32, shape: $0.1) }
        let writer = try CheckpointWriter(destination: path + "/adapter_model.safetensors", layout: .file, tensors: infos, metadata: nil,
                                          overwrite: true, inputs: [])
        for info in infos { try [Float](repeating: 0.5, count: info.elementCount).withUnsafeBytes { try writer.write($0) } }
        try writer.commit()
        return try LoRAAdapter(path: path)
    }

    private let base = [TensorInfo(name: "q.weight", dtype: .f32, shape: [8, 8]), TensorInfo(name: "q.bias", dtype: .f32, shape: [8]),
                        TensorInfo(name: "head.weight", dtype: .f32, shape: [8, 8])]
    private let factors = [("q.lora_A.weight", [2, 8]), ("q.lora_B.weight", [8, 2])]

    private func plan(_ adapters: [LoRAAdapter], _ method: LoRACombinationMethod, weights: [Double]? = nil) throws -> LoRAMergePlan {
        try LoRAMergePlan(combining: adapters, combination: LoRACombination(method: method, weights: weights ?? adapters.map { _ in 1 }),
                          baseTensors: base, baseDescription: "base")
    }

    /// What PEFT's add_weighted_adapter does not carry into the combined
    /// adapter is refused, naming the adapter, the tensor and the feature.
    func testCombinationsRefuseWhatPEFTDoesNotCombine() throws {
        let folder = TemporaryDirectory("qconv-combine")
        let plain = try adapter(folder, "plain", config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4}"#, factors)
        let dora = try adapter(folder, "dora", config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_dora": true}"#,
                               factors + [("q.lora_magnitude_vector", [8])])
        let saved = try adapter(folder, "saved", config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "modules_to_save": ["head"]}"#,
                                factors + [("head.weight", [8, 8])])
        let biased = try adapter(folder, "biased", config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "lora_bias": true}"#,
                                 factors + [("q.lora_B.bias", [8])])
        let conv1d = try adapter(folder, "conv1d", config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "fan_in_fan_out": true}"#, factors)
        func refusal(_ adapters: [LoRAAdapter], weights: [Double]? = nil) -> LoRACombinationError? {
            do { _ = try plan(adapters, .cat, weights: weights) } catch let error as LoRACombinationError { return error } catch { XCTFail("\(error)") }
            return nil
        }
        XCTAssertEqual(refusal([plain, dora]), .unsupported(adapter: dora.path, tensor: "base_model.model.q.lora_magnitude_vector", feature: "a DoRA magnitude"))
        XCTAssertEqual(refusal([saved, plain]), .unsupported(adapter: saved.path, tensor: "base_model.model.head.weight",
                                                             feature: "a whole-module tensor (modules_to_save)"))
        XCTAssertEqual(refusal([plain, biased]), .unsupported(adapter: biased.path, tensor: "base_model.model.q.lora_B.bias", feature: "lora_B.bias"))
        XCTAssertEqual(refusal([plain, conv1d]), .kindsDiffer(tensor: "q.weight", kinds: ["\(plain.path): linear", "\(conv1d.path): linear-fan-in-fan-out"]))
        XCTAssertEqual(refusal([plain, plain], weights: [1]), .weightCount(adapters: 2, weights: 1))
        XCTAssertEqual(LoRACombinationError.weightCount(adapters: 2, weights: 1).category, .usage)
        XCTAssertNil(refusal([plain, plain]))
    }

    /// A base layer an adapter stores (as PEFT stores `embed_tokens.base_layer.weight`
    /// with an embedding's adapter) replaces the base tensor as loading the
    /// adapters in order would: the last one that stores it wins, and the
    /// combined delta goes on top; one stored alone is a replacement.
    func testCombinationsTakeTheLastAdaptersBaseLayer() throws {
        let folder = TemporaryDirectory("qconv-combine")
        let config = #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4}"#
        let first = try adapter(folder, "first", config: config, factors + [("q.base_layer.weight", [8, 8]), ("q.base_layer.bias", [8])])
        let second = try adapter(folder, "second", config: config, factors + [("q.base_layer.weight", [8, 8])])
        let plain = try adapter(folder, "plain", config: config, factors)
        for (adapters, weightFrom) in [([first, second], "second"), ([second, first], "first"), ([first, plain], "first")] {
            let combined = try plan(adapters, .cat)
            let weight = try XCTUnwrap(combined.change(for: "q.weight"))
            XCTAssertNotNil(weight.combined)
            XCTAssertEqual(weight.replacement?.file.path, folder.file(weightFrom) + "/adapter_model.safetensors")
            let bias = try XCTUnwrap(combined.change(for: "q.bias"))
            XCTAssertEqual(bias.kind, .replacement)
            XCTAssertEqual(bias.replacement?.file.path, folder.file("first") + "/adapter_model.safetensors")
        }
        // The merged values start from the stored base layer (0.5), not from the
        // base's values: cat of two r=2 LoRAs with every factor 0.5 and
        // scale 4/2 adds 4 * 0.5 * (0.5 * 2) = 2.
        let combined = try plan([first, plain], .cat)
        let prepared = try combined.prepare(XCTUnwrap(combined.change(for: "q.weight")))
        var values = [Float](repeating: 7, count: 64)
        values.withUnsafeMutableBufferPointer { prepared.apply(to: $0.baseAddress!, rows: 0..<8) }
        XCTAssertEqual(values, [Float](repeating: 2.5, count: 64))
    }

    /// `cat` on a 16-bit base holds the stacked factors in the base's dtype,
    /// as PEFT's combined adapter is; on a float32 base, a quantized one, or
    /// through a quantization, in float32; the other methods always in float32.
    func testCatHoldsItsFactorsInTheBasesSixteenBitDType() throws {
        let folder = TemporaryDirectory("qconv-combine")
        let a = try adapter(folder, "a", config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4}"#, factors)
        func factorDType(_ dtype: DType, _ method: LoRACombinationMethod = .cat, quantized: Set<String> = []) throws -> DType? {
            let combined = try LoRAMergePlan(combining: [a, a], combination: LoRACombination(method: method, weights: [1, 1]),
                                             baseTensors: [TensorInfo(name: "q.weight", dtype: dtype, shape: [8, 8])], baseDescription: "base",
                                             quantizedTensors: quantized)
            return combined.changes.first?.combined?.factorDType
        }
        XCTAssertEqual(try factorDType(.f16), .f16)
        XCTAssertEqual(try factorDType(.bf16), .bf16)
        XCTAssertNil(try factorDType(.f32))
        XCTAssertNil(try factorDType(.f16, quantized: ["q.weight"]))
        XCTAssertNil(try factorDType(.f16, .factors(.sum)))
        let through = try LoRAMergePlan(combining: [a, a], combination: LoRACombination(method: .cat, weights: [1, 1]),
                                        baseTensors: [TensorInfo(name: "q.weight", dtype: .f16, shape: [8, 8])], baseDescription: "base")
            .throughQuantization { _ in true }
        XCTAssertNil(through.changes.first?.combined?.factorDType)
        XCTAssertTrue(through.fusesProducts)
    }

    /// PEFT gives the combined adapter `r = lora_alpha = new rank` and
    /// otherwise the first adapter's config: scale 1, or sqrt(new rank)
    /// when that adapter uses rsLoRA; the new rank is the sum for `cat`.
    func testCombinedScaleAndRankArePEFTs() throws {
        let folder = TemporaryDirectory("qconv-combine")
        let plain = try adapter(folder, "plain", config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4}"#, factors)
        let rs = try adapter(folder, "rs", config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_rslora": true}"#, factors)
        let cat = try XCTUnwrap(plan([plain, rs], .cat).changes.first)
        XCTAssertEqual(cat.rank, 4)
        XCTAssertEqual(cat.scale, 1)
        let rsFirst = try XCTUnwrap(plan([rs, plain], .cat).changes.first)
        XCTAssertEqual(rsFirst.scale, 2, "sqrt(4)")
        let svd = try XCTUnwrap(plan([rs, plain], .svd(.sum, LoRASVDTruncation(rank: 3))).changes.first)
        XCTAssertEqual(svd.rank, 3)
        XCTAssertEqual(try XCTUnwrap(svd.scale), 3.0.squareRoot(), accuracy: 1e-15)
        XCTAssertEqual(try XCTUnwrap(plan([plain, rs], .factors(.sum)).changes.first).rank, 2)
        let combined = try XCTUnwrap(cat.combined)
        XCTAssertEqual(combined.contributions.map(\.weight), [1, 1])
        XCTAssertEqual(cat.adapterTensors.count, 4, "every adapter's factors are listed")
    }

    /// The lookahead gives what preparing on the spot gives, in plan order
    /// (the next change computed while this one is used) and out of it.
    func testLookaheadPreparesWhatPreparingOnTheSpotGives() throws {
        let folder = TemporaryDirectory("qconv-combine")
        let tensors = factors + [("k.lora_A.weight", [2, 8]), ("k.lora_B.weight", [8, 2])]
        let a = try adapter(folder, "a", config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4}"#, tensors)
        let b = try adapter(folder, "b", config: #"{"peft_type": "LORA", "r": 2, "lora_alpha": 2}"#, tensors)
        let plan = try LoRAMergePlan(combining: [a, b], combination: LoRACombination(method: .svd(.sum, LoRASVDTruncation(rank: 3)), weights: [1, -0.5]),
                                     baseTensors: base + [TensorInfo(name: "k.weight", dtype: .f32, shape: [8, 8])], baseDescription: "base")
        XCTAssertEqual(plan.changes.count, 2)
        func merged(_ prepared: LoRAPreparedChange) -> [Float] {
            var values = [Float](repeating: 0, count: 64)
            values.withUnsafeMutableBufferPointer { prepared.apply(to: $0.baseAddress!, rows: 0..<8) }
            return values
        }
        let expected = try plan.changes.map { merged(try plan.prepare($0, decodeReplacement: false, threads: 1)) }
        let inOrder = LookaheadPreparation(plan: plan)
        XCTAssertEqual(try plan.changes.map { merged(try inOrder.prepared($0, threads: 2)) }, expected)
        let reversed = LookaheadPreparation(plan: plan)
        XCTAssertEqual(try plan.changes.reversed().map { merged(try reversed.prepared($0, threads: 2)) }, expected.reversed())
        XCTAssertNotEqual(expected[0], [Float](repeating: 0, count: 64))
    }
}
