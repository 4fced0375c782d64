import Glibc
import QConvKit

/// The same model in the other source formats qconv reads, for `to-nf4`
/// from each: the benchmark's tensors as a PyTorch `.bin` (written here, as
/// torch.save lays one out), and FP8 weights of the same shapes with
/// 128x128 block scales (DeepSeek-V3's layout).
enum SourceFormats {
    /// The 2-D weights `to-nf4` quantizes by default, which an FP8 checkpoint stores in FP8.
    static func isFP8(_ tensor: TensorInfo) -> Bool {
        tensor.shape.count == 2 && !TensorSelection.isLeftUnquantizedByDefault(tensor.name)
    }

    /// `pytorch_model.bin` holding the tensors of `weights` (a safetensors file), unless it is there.
    static func prepareBin(from weights: String, to path: String) throws {
        guard FileSystem.kind(of: path) != .file else { return }
        log("writing \(path)")
        let source = try SafeTensorsFile(path: weights)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        try TorchCheckpointWriter.write(to: path, tensors: source.tensors.map(\.info), archiveName: "pytorch_model", overwrite: false) { i, write in
            let entry = source.tensors[i]
            var done = 0
            while done < entry.info.byteCount {
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(buffer.count, entry.info.byteCount - done)])
                try source.read(entry, at: done, into: piece)
                try write(UnsafeRawBufferPointer(piece))
                done += piece.count
            }
        }
    }

    /// A model folder of the same shapes with FP8 linear weights (random
    /// codes, no NaN) and F32 block scales, the rest BF16, and a config
    /// with its `quantization_config`; unless it is there.
    static func prepareFP8(_ model: SyntheticModel, in folder: String) throws {
        guard FileSystem.kind(of: folder + "/model.safetensors") != .file else { return }
        log("writing \(folder) (FP8, block-scaled)")
        var tensors: [TensorInfo] = []
        for tensor in model.tensors {
            guard isFP8(tensor) else {
                tensors.append(TensorInfo(name: tensor.name, dtype: .bf16, shape: tensor.shape))
                continue
            }
            tensors.append(TensorInfo(name: tensor.name, dtype: .f8e4m3, shape: tensor.shape))
            tensors.append(TensorInfo(name: tensor.name + "_scale_inv", dtype: .f32,
                                      shape: [(tensor.shape[0] + 127) / 128, (tensor.shape[1] + 127) / 128]))
        }
        tensors = SafeTensorsWriter.referenceOrder(tensors)
        let writer = try CheckpointWriter(destination: folder, layout: .folder(shards: [("model.safetensors", tensors)]), tensors: tensors,
                                          metadata: [("format", "pt")], overwrite: true, inputs: [])
        let config = "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"torch_dtype\": \"bfloat16\",\n"
            + "  \"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}\n}\n"
        try writer.addFile(named: "config.json", bytes: Array(config.utf8))
        var random = SplitMix64(seed: 2)
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        for tensor in tensors {
            var done = 0
            while done < tensor.byteCount {
                let n = min(bytes.count, tensor.byteCount - done)
                for i in stride(from: 0, to: n, by: 8) {
                    let value = random.next()
                    for k in 0..<min(8, n - i) { bytes[i + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
                }
                switch tensor.dtype {
                case .f8e4m3: for i in 0..<n where bytes[i] & 0x7F == 0x7F { bytes[i] = 0 }  // no NaN codes
                case .f32: for i in stride(from: 0, to: n, by: 4) { bytes[i + 3] = 0x39; bytes[i + 2] &= 0x7F }  // scales about 1e-4
                default: for i in stride(from: 1, to: n, by: 2) { bytes[i] = 0x3C | (bytes[i] & 0x80) }  // BF16 of about ±0.01
                }
                try bytes.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                done += n
            }
        }
        try writer.commit()
    }

    /// to-nf4 from the .bin and from the FP8 model, each against to-nf4 from safetensors F16 (`reference`).
    static func run(settings: Settings, model: SyntheticModel, weights: String, work: String, threads: [String], reference: Row) throws {
        let bin = work + "/bin/pytorch_model.bin", fp8 = work + "/fp8"
        mkdir(work + "/bin", 0o755)
        try prepareBin(from: weights, to: bin)
        try prepareFP8(model, in: fp8)
        let q = settings.qconv
        let rows = [
            timeAgainstCopy("qconv to-nf4 from pytorch_model.bin", [q, "to-nf4", bin, work + "/out.qc", "--quiet"] + threads,
                            output: work + "/out.qc", copySource: bin, runs: settings.runs, targetRatio: nil, targetRSS: 300_000_000),
            timeAgainstCopy("qconv to-nf4 from FP8 (block-scaled)", [q, "to-nf4", fp8, work + "/out.qc", "--quiet"] + threads,
                            output: work + "/out.qc", copySource: fp8 + "/model.safetensors", runs: settings.runs, targetRatio: nil, targetRSS: 300_000_000),
        ]
        FileSystem.removeItem(work + "/out.qc")
        print("\n### Source formats: `to-nf4` from each, against from safetensors F16\n")
        print("| source | median time | peak RSS | ratio to safetensors F16 (\(fixed(reference.seconds, 3)) s) | target | met |")
        print("|---|---:|---:|---:|---|---|")
        for row in rows {
            let ratio = row.seconds / reference.seconds
            let met = settings.quick ? "- (1.07 GB model only)" : !row.failed && ratio <= 1.2 && row.met ? "yes" : "NO"
            print("| \(row.command) | \(fixed(row.seconds, 3)) s | \(megabytes(row.peakRSS)) | \(fixed(ratio, 2)) | ≤ 1.2 ×, ≤ 300 MB | \(met) |")
        }
    }
}
