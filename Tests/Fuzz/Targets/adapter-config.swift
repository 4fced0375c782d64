// adapter_config.json: parsed, then the rank and alpha of module names looked
// up (real names, and every pattern key as a name), with a small step budget.
@testable import QConvKit

private let modules = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "lm_head", "model.embed_tokens",
                       "transformer.h.0.attn.c_attn", "q_proj", "", "a.b.c\n"]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let config = try? LoRAAdapterConfig(json: bytes, file: "adapter_config.json", patternSteps: 5_000_000) else { return 0 }
    for module in modules + config.rankPattern.prefix(50).map(\.key) + config.alphaPattern.prefix(50).map(\.key) {
        _ = try? config.rank(forModule: module)
        _ = try? config.alpha(forModule: module)
    }
    _ = config.scale(rank: config.rank, alpha: config.alpha)
    return 0
}
