// adapter_model.safetensors of a PEFT adapter (with the sample's config):
// tensor names grouped into modules, then the merge planned against the
// sample base, as `merge-lora --dry-run` does.
import Glibc
@testable import QConvKit

private let setUp: (adapter: String, base: Model?) = {
    let root = String(cString: getenv("QCONV_REPOSITORY") ?? strdup("."))
    let folder = fuzzScratch + "/adapter"
    mkdir(folder, 0o755)
    let config = (try? ReadableFile(path: root + "/Samples/lora_llama_basic/adapter/adapter_config.json"))
        .flatMap { try? $0.readBytes(at: 0, count: Int($0.size)) } ?? Array(#"{"peft_type": "LORA", "r": 8}"#.utf8)
    _ = config.withUnsafeBufferPointer { writeScratch("adapter/adapter_config.json", $0.baseAddress!, $0.count) }
    return (folder, try? Model.open(root + "/Samples/lora_llama_basic/base"))
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let (folder, base) = setUp
    _ = writeScratch("adapter/adapter_model.safetensors", data, size)
    guard let adapter = try? LoRAAdapter(path: folder), let base else { return 0 }
    _ = try? LoRAMerger.plan(base: base, adapter: adapter)
    return 0
}
