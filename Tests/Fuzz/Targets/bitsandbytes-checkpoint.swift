// A bitsandbytes checkpoint (transformers' layout): a model folder whose
// config.json says `quant_method: bitsandbytes` and whose model.safetensors
// is the input. Read as every command reads it, and checked as
// `verify BNB` checks it (every layout rule, every problem reported).
import Glibc
@testable import QConvKit

private let folder: String = {
    let path = fuzzScratch + "/bnb"
    mkdir(path, 0o755)
    let config = Array(#"""
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float16",
         "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true, "load_in_8bit": false,
          "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true, "bnb_4bit_compute_dtype": "float16",
          "bnb_4bit_quant_storage": "uint8", "llm_int8_threshold": 6.0}}
        """#.utf8)
    _ = config.withUnsafeBufferPointer { writeScratch("bnb/config.json", $0.baseAddress!, $0.count) }
    return path
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = folder
    let file = writeScratch("bnb/model.safetensors", data, size)
    readModelAsEveryCommandDoes(folder)
    readModelAsEveryCommandDoes(file)
    _ = try? BitsandbytesCheck.check(path: folder)
    return 0
}
