// config.json of a model folder, which decides how its weights are read: an
// FP8 checkpoint's `quantization_config` (block sizes of `weight_scale_inv`),
// a bitsandbytes checkpoint's. Two folders with valid weights (FP8
// block-scaled, bitsandbytes nf4) get the input as their config.json.
import Glibc
@testable import QConvKit

private let folders: [String] = {
    let repository = getenv("QCONV_REPOSITORY").map { String(cString: $0) } ?? "."
    return [("fp8", "Tests/Fixtures/fp8/block_scaled/model.safetensors"), ("bnb", "Tests/Fixtures/hf_bnb/nf4_dq_f16/model.safetensors")]
        .map { name, weights in
            let path = fuzzScratch + "/config-" + name
            mkdir(path, 0o755)
            let bytes = try! ReadableFile(path: repository + "/" + weights)
            let contents = try! bytes.readBytes(at: 0, count: Int(bytes.size))
            _ = contents.withUnsafeBufferPointer { writeScratch("config-\(name)/model.safetensors", $0.baseAddress!, $0.count) }
            return path
        }
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    for folder in folders {
        _ = writeScratch(FileSystem.baseName(of: folder) + "/config.json", data, size)
        readModelAsEveryCommandDoes(folder)
        _ = try? BitsandbytesCheck.check(path: folder)
    }
    return 0
}
