import QConvKit

/// The Llama-shaped checkpoint and LoRA adapter the benchmark runs on, made
/// deterministically (same bytes on every machine) so figures compare.
///
/// Shapes follow `../shared/peers/make_synthetic_llama.py`: weights are
/// N(0, 0.02), norms are ones, F16, `{"format": "pt"}` metadata.
struct SyntheticModel {
    var hidden = 2048
    var layers = 8
    var intermediate = 5504
    var vocabulary = 32000

    /// About 1.07 GB: the configuration the targets of issue 6 are stated for.
    static let standard = SyntheticModel()
    /// About 0.13 GB, for `--quick`.
    static let quick = SyntheticModel(hidden: 1024, layers: 4, intermediate: 2752, vocabulary: 8000)

    /// The standard shape with `layers` chosen to reach about `bytes`; the
    /// vocabulary is halved so that one layer fits in a quarter of a gigabyte.
    static func sized(_ bytes: Double) -> SyntheticModel {
        var model = SyntheticModel.standard
        model.vocabulary = 16000
        let fixed = Double(2 * model.vocabulary * model.hidden + model.hidden) * 2
        let perLayer = Double(4 * model.hidden * model.hidden + 3 * model.hidden * model.intermediate + 2 * model.hidden) * 2
        model.layers = max(1, Int(((bytes - fixed) / perLayer).rounded()))
        return model
    }

    static let linearModules = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

    func shape(of module: String) -> [Int] {
        switch module {
        case "mlp.gate_proj", "mlp.up_proj": return [intermediate, hidden]
        case "mlp.down_proj": return [hidden, intermediate]
        default: return [hidden, hidden]
        }
    }

    /// Tensors in the order the reference writer stores them (sorted by name).
    var tensors: [TensorInfo] {
        var list = [TensorInfo(name: "model.embed_tokens.weight", dtype: .f16, shape: [vocabulary, hidden]),
                    TensorInfo(name: "lm_head.weight", dtype: .f16, shape: [vocabulary, hidden]),
                    TensorInfo(name: "model.norm.weight", dtype: .f16, shape: [hidden])]
        for layer in 0..<layers {
            let prefix = "model.layers.\(layer)."
            for module in Self.linearModules {
                list.append(TensorInfo(name: prefix + module + ".weight", dtype: .f16, shape: shape(of: module)))
            }
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                list.append(TensorInfo(name: prefix + norm + ".weight", dtype: .f16, shape: [hidden]))
            }
        }
        return list.sorted { $0.name < $1.name }
    }

    var byteCount: Int { tensors.reduce(0) { $0 + $1.byteCount } }

    /// Writes the checkpoint as one safetensors file.
    func write(to path: String) throws {
        let writer = try CheckpointWriter(destination: path, layout: .file, tensors: tensors, metadata: [("format", "pt")],
                                          overwrite: true, inputs: [])
        var random = SplitMix64(seed: 0)
        for tensor in tensors {
            let isNorm = tensor.shape.count == 1
            try writeNormal(tensor.elementCount, std: isNorm ? 0 : 0.02, mean: isNorm ? 1 : 0, random: &random, into: writer.write)
        }
        try writer.commit()
    }

    /// Writes a PEFT adapter folder: r, alpha = 2r, F16, every linear module;
    /// `seed` makes another adapter of the same shapes.
    func writeAdapter(to folder: String, rank: Int, seed: UInt64 = 1) throws {
        var tensors: [TensorInfo] = []
        for layer in 0..<layers {
            for module in Self.linearModules {
                let (out, input) = (shape(of: module)[0], shape(of: module)[1])
                let base = "base_model.model.model.layers.\(layer).\(module)"
                tensors.append(TensorInfo(name: base + ".lora_A.weight", dtype: .f16, shape: [rank, input]))
                tensors.append(TensorInfo(name: base + ".lora_B.weight", dtype: .f16, shape: [out, rank]))
            }
        }
        tensors.sort { $0.name < $1.name }
        let targets = Self.linearModules.map { JSONValue.string(String($0.split(separator: ".").last!)) }
        let config: JSONValue = .object([
            "peft_type": "LORA", "r": .int(rank), "lora_alpha": .int(2 * rank), "bias": "none", "fan_in_fan_out": false,
            "use_rslora": false, "use_dora": false, "task_type": "CAUSAL_LM", "target_modules": .array(targets),
        ])
        let writer = try CheckpointWriter(destination: folder, layout: .folder(shards: [("adapter_model.safetensors", tensors)]),
                                          tensors: tensors, metadata: [("format", "pt")], overwrite: true, inputs: [])
        try writer.addFile(named: "adapter_config.json", bytes: Array(JSONWriter.serialize(config, style: .indented).utf8))
        var random = SplitMix64(seed: seed)
        for tensor in tensors {
            try writeNormal(tensor.elementCount, std: 0.01, mean: 0, random: &random, into: writer.write)
        }
        try writer.commit()
    }

    private func writeNormal(_ count: Int, std: Float, mean: Float, random: inout SplitMix64,
                             into write: (UnsafeRawBufferPointer) throws -> Void) throws {
        let chunk = 1 << 16
        var floats = [Float](repeating: 0, count: chunk)
        var halves = [UInt8](repeating: 0, count: chunk * 2)
        var done = 0
        while done < count {
            let n = min(chunk, count - done)
            for i in 0..<n { floats[i] = std == 0 ? mean : mean + std * random.nextGaussian() }
            floats.withUnsafeBufferPointer { source in
                halves.withUnsafeMutableBytes { FloatConversion.encode(source.baseAddress!, count: n, as: .f16, into: $0.baseAddress!) }
            }
            try halves.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<n * 2])) }
            done += n
        }
    }
}

/// A small, fast, seedable generator (SplitMix64) with Gaussian samples by Box-Muller.
struct SplitMix64 {
    private var state: UInt64
    private var spare: Float?

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= QConvKit.SplitMix64.increment
        return QConvKit.SplitMix64.mix(state)
    }

    /// Uniform in (0, 1].
    mutating func nextUniform() -> Float { (Float(next() >> 40) + 1) / Float(1 << 24) }

    mutating func nextGaussian() -> Float {
        if let value = spare { spare = nil; return value }
        let radius = (-2 * logf(nextUniform())).squareRoot()
        let angle = 2 * Float.pi * nextUniform()
        spare = radius * sinf(angle)
        return radius * cosf(angle)
    }
}

import Glibc
