import XCTest
import QConvKit
import QConvTestSupport

/// adapter_config.json parsing, rank/alpha patterns, tensor key names and the key mapping.
final class LoRAConfigTests: XCTestCase {
    private func config(_ json: String) throws -> LoRAAdapterConfig {
        try LoRAAdapterConfig(json: Array(json.utf8), file: "adapter_config.json")
    }

    private func assertThrows(_ json: String, _ expected: (LoRAMergeError) -> Bool, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try config(json), file: file, line: line) { error in
            guard let error = error as? LoRAMergeError else { return XCTFail("not a LoRAMergeError: \(error)", file: file, line: line) }
            XCTAssertTrue(expected(error), "\(error)", file: file, line: line)
            XCTAssertEqual(error.category, .invalidInput, file: file, line: line)
        }
    }

    func testReferenceConfigParses() throws {
        let path = Fixtures.path("lora/lora_llama_rslora_patterns/adapter/adapter_config.json")
        let bytes = Array(try String(contentsOfFile: path, encoding: .utf8).utf8)
        let parsed = try LoRAAdapterConfig(json: bytes, file: path)
        XCTAssertEqual(parsed.rank, 4)
        XCTAssertEqual(parsed.alpha, 32)
        XCTAssertTrue(parsed.useRSLoRA)
        XCTAssertFalse(parsed.useDoRA)
        XCTAssertEqual(parsed.rankPattern.map(\.key), ["layers.1.mlp.down_proj"])
        XCTAssertEqual(parsed.alphaPattern.map(\.key), ["o_proj"])
        XCTAssertEqual(try parsed.rank(forModule: "model.layers.1.mlp.down_proj"), 2)
        XCTAssertEqual(try parsed.rank(forModule: "model.layers.0.mlp.down_proj"), 4)
        XCTAssertEqual(try parsed.alpha(forModule: "model.layers.0.self_attn.o_proj"), 8)
        XCTAssertEqual(try parsed.alpha(forModule: "model.layers.0.self_attn.q_proj"), 32)
        // rsLoRA: alpha / sqrt(r)
        XCTAssertEqual(parsed.scale(rank: 2, alpha: 32), 32 / 2.0.squareRoot())
        XCTAssertEqual(parsed.scale(rank: 4, alpha: 8, multiplier: 0.5), 2)
    }

    func testDefaultsForMissingFields() throws {
        let parsed = try config(#"{"peft_type": "LORA"}"#)
        XCTAssertEqual(parsed.rank, 8)
        XCTAssertEqual(parsed.alpha, 8)
        XCTAssertFalse(parsed.useRSLoRA || parsed.useDoRA || parsed.fanInFanOut || parsed.loraBias)
        XCTAssertEqual(parsed.bias, "none")
        XCTAssertEqual(parsed.scale(rank: 8, alpha: 16), 2)
    }

    func testPatternsMatchLikePEFT() throws {
        // PEFT: re.match(rf"(.*\.)?({key})$", name), the first key in map order wins.
        let parsed = try config(#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16,"#
            + #" "rank_pattern": {"q_proj": 2, "layers.0.self_attn.q_proj": 4, "layers\\.[12]\\..*_proj": 6, "v_proj|k_proj": 3},"#
            + #" "alpha_pattern": {"layers.1.mlp.down_proj": 1.5}}"#)
        XCTAssertEqual(try parsed.rank(forModule: "model.layers.0.self_attn.q_proj"), 2, "first key in order wins")
        XCTAssertEqual(try parsed.rank(forModule: "model.layers.2.mlp.up_proj"), 6)
        XCTAssertEqual(try parsed.rank(forModule: "model.layers.0.self_attn.k_proj"), 3, "alternation inside the group")
        XCTAssertEqual(try parsed.rank(forModule: "model.layers.0.self_attn.o_proj"), 8)
        XCTAssertEqual(try parsed.rank(forModule: "model.layers.0.self_attn.xq_proj"), 8, "a key matches whole components only")
        XCTAssertEqual(try parsed.alpha(forModule: "model.layers.1.mlp.down_proj"), 1.5)
        XCTAssertEqual(try parsed.alpha(forModule: "model.layers.11.mlp.down_proj"), 16)
        // An unescaped dot matches any character, as in Python.
        XCTAssertEqual(try parsed.alpha(forModule: "model.layersX1.mlp.down_proj"), 1.5)
    }

    func testDuplicatePatternKeysKeepFirstPlaceAndLastValue() throws {
        let parsed = try config(#"{"peft_type": "LORA", "rank_pattern": {"a": 1, "b": 2, "a": 3}}"#)
        XCTAssertEqual(parsed.rankPattern.map(\.key), ["a", "b"])
        XCTAssertEqual(parsed.rankPattern.map(\.rank), [3, 2])
    }

    func testRefusals() {
        assertThrows(#"{"peft_type": "LOHA", "r": 8}"#) { if case .unsupportedPeftType(_, "LOHA") = $0 { return true }; return false }
        assertThrows(#"{"r": 8}"#) { if case .invalidConfig(_, "peft_type", _) = $0 { return true }; return false }
        assertThrows(#"{"peft_type": "LORA", "r": "8"}"#) { if case .invalidConfig(_, "r", _) = $0 { return true }; return false }
        assertThrows(#"{"peft_type": "LORA", "r": 0}"#) { if case .invalidConfig(_, "r", _) = $0 { return true }; return false }
        assertThrows(#"{"peft_type": "LORA", "bias": "some"}"#) { if case .invalidConfig(_, "bias", _) = $0 { return true }; return false }
        assertThrows(#"{"peft_type": "LORA", "rank_pattern": {"q_proj": 1.5}}"#) { if case .invalidConfig(_, "rank_pattern", _) = $0 { return true }; return false }
        assertThrows(#"{"peft_type": "LORA", "rank_pattern": {"(q_proj": 2}}"#) { if case .invalidPattern(_, "rank_pattern", "(q_proj", _) = $0 { return true }; return false }
        assertThrows(#"{"peft_type": "LORA", "use_qalora": true}"#) { if case .unsupportedFeature(_, "use_qalora", _) = $0 { return true }; return false }
        assertThrows(#"{"peft_type": "LORA", "layer_replication": [[0, 2]]}"#) { if case .unsupportedFeature(_, "layer_replication", _) = $0 { return true }; return false }
        assertThrows(#"{"peft_type": "LORA", "trainable_token_indices": [1, 2]}"#) { if case .unsupportedFeature(_, "trainable_token_indices", _) = $0 { return true }; return false }
        assertThrows(#"{"peft_type": "LORA", "alora_invocation_tokens": [5]}"#) { if case .unsupportedFeature(_, "alora_invocation_tokens", _) = $0 { return true }; return false }
        assertThrows(#"["LORA"]"#) { if case .invalidConfig(_, "(document)", _) = $0 { return true }; return false }
        assertThrows(#"{"peft_type": "LORA""#) { if case .invalidConfig(_, "(document)", _) = $0 { return true }; return false }
        // Options that only shape training are accepted as they are in every saved config.
        XCTAssertNoThrow(try config(#"{"peft_type": "LORA", "layer_replication": null, "loftq_config": {}, "trainable_token_indices": null, "init_lora_weights": "pissa"}"#))
    }

    func testTensorKeys() {
        func key(_ name: String) -> LoRATensorKey? { LoRATensorKey(name) }
        XCTAssertEqual(key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")?.module, "model.layers.0.self_attn.q_proj")
        XCTAssertEqual(key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")?.role, .down)
        XCTAssertEqual(key("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")?.role, .up)
        XCTAssertEqual(key("base_model.model.transformer.h.0.attn.c_attn.lora_B.bias")?.role, .upBias)
        XCTAssertEqual(key("base_model.model.model.embed_tokens.lora_embedding_A")?.role, .embeddingDown)
        XCTAssertEqual(key("base_model.model.model.embed_tokens.lora_embedding_B")?.role, .embeddingUp)
        XCTAssertEqual(key("base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector")?.role, .magnitude)
        XCTAssertEqual(key("base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector.weight")?.role, .magnitude)
        // Whole tensors: the base tensor they replace, without .base_layer.
        XCTAssertEqual(key("base_model.model.transformer.h.0.attn.c_attn.base_layer.bias"), key("transformer.h.0.attn.c_attn.bias"))
        XCTAssertEqual(key("base_model.model.model.embed_tokens.base_layer.weight")?.module, "model.embed_tokens.weight")
        XCTAssertNil(key("base_model.model.lm_head.weight")?.role)
        XCTAssertEqual(key("base_model.model.lm_head.weight")?.module, "lm_head.weight")
        // Keys that carry the adapter's name (a PEFT model's own state_dict()).
        XCTAssertEqual(key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight")?.module, "model.layers.0.self_attn.q_proj")
        XCTAssertEqual(key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight")?.role, .down)
        XCTAssertEqual(key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight")?.adapterName, "default")
        XCTAssertEqual(key("model.layers.0.self_attn.q_proj.lora_B.my_task.weight")?.role, .up)
        XCTAssertEqual(key("transformer.h.0.attn.c_attn.lora_B.default.bias")?.role, .upBias)
        XCTAssertEqual(key("model.embed_tokens.lora_embedding_A.default")?.role, .embeddingDown)
        XCTAssertEqual(key("model.embed_tokens.lora_embedding_B.default")?.role, .embeddingUp)
        XCTAssertEqual(key("model.layers.0.mlp.up_proj.lora_magnitude_vector.default")?.role, .magnitude)
        XCTAssertEqual(key("model.layers.0.mlp.up_proj.lora_magnitude_vector.default.weight")?.role, .magnitude)
        XCTAssertEqual(key("model.layers.0.mlp.up_proj.base_layer.lora_A.default.weight")?.module, "model.layers.0.mlp.up_proj")
        XCTAssertEqual(key("base_model.model.lm_head.modules_to_save.default.weight")?.module, "lm_head.weight")
        XCTAssertNil(key("base_model.model.lm_head.modules_to_save.default.weight")?.role)
        XCTAssertEqual(key("base_model.model.lm_head.modules_to_save.default.weight")?.adapterName, "default")
        XCTAssertNil(key("base_model.model.lm_head.weight")?.adapterName)
        // LoRA markers in unknown places and other tuners' tensors cannot be placed.
        XCTAssertNil(key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.default"))
        XCTAssertNil(key("model.layers.0.self_attn.q_proj.lora_A.default.bias"))
        XCTAssertNil(key("model.layers.0.self_attn.q_proj.lora_A.default.lora_B.weight"))
        XCTAssertNil(key("lora_A.default.weight"))
        XCTAssertNil(key("base_model.model.model.layers.0.self_attn.q_proj.hada_w1_a"))
        XCTAssertNil(key("base_model.model.lm_head.modules_to_save.default"))
    }

    func testKeyMappingIdentity() {
        let base: Set = ["model.layers.0.q_proj.weight", "model.layers.1.q_proj.weight", "lm_head.weight"]
        XCTAssertEqual(LoRAKeyMapping.resolve(adapterNames: ["model.layers.0.q_proj.weight", "lm_head.weight"], baseNames: base), .identity)
        XCTAssertEqual(LoRAKeyMapping.identity.description, "identity (base_model.model. removed)")
    }

    func testKeyMappingAddsMissingPrefix() {
        // An adapter trained on LlamaModel (no "model.") against a LlamaForCausalLM checkpoint.
        let base: Set = ["model.layers.0.q_proj.weight", "model.layers.1.q_proj.weight", "model.layers.1.v_proj.weight", "lm_head.weight"]
        let mapping = LoRAKeyMapping.resolve(adapterNames: ["layers.0.q_proj.weight", "layers.1.v_proj.weight"], baseNames: base)
        XCTAssertEqual(mapping, LoRAKeyMapping(removedPrefix: "", addedPrefix: "model."))
        XCTAssertEqual(mapping.baseName(for: "layers.1.v_proj.weight"), "model.layers.1.v_proj.weight")
        XCTAssertEqual(mapping.description, "prefix 'model.' added")
    }

    func testKeyMappingRemovesOrReplacesPrefix() {
        let base: Set = ["model.layers.0.q_proj.weight", "model.layers.1.q_proj.weight"]
        let removed = LoRAKeyMapping.resolve(adapterNames: ["model.model.layers.0.q_proj.weight", "model.model.layers.1.q_proj.weight"], baseNames: base)
        XCTAssertEqual(removed, LoRAKeyMapping(removedPrefix: "model.", addedPrefix: ""), "the smallest change wins")
        XCTAssertEqual(removed.baseName(for: "model.model.layers.1.q_proj.weight"), "model.layers.1.q_proj.weight")
        let replaced = LoRAKeyMapping.resolve(adapterNames: ["language_model.layers.0.q_proj.weight", "language_model.layers.1.q_proj.weight"], baseNames: base)
        XCTAssertEqual(replaced, LoRAKeyMapping(removedPrefix: "language_model.", addedPrefix: "model."))
        XCTAssertEqual(replaced.description, "prefix 'language_model.' replaced by 'model.'")
    }

    /// Names without the removed prefix (here `lm_head`) keep their name, in
    /// choosing the mapping as in the merge.
    func testKeyMappingKeepsNamesWithoutTheRemovedPrefix() {
        let base: Set = ["layers.0.q_proj.weight", "layers.1.q_proj.weight", "lm_head.weight"]
        let mapping = LoRAKeyMapping.resolve(adapterNames: ["model.layers.0.q_proj.weight", "lm_head.weight"], baseNames: base)
        XCTAssertEqual(mapping, LoRAKeyMapping(removedPrefix: "model.", addedPrefix: ""))
    }

    func testKeyMappingWithoutFullMatchKeepsTheBestOne() {
        let base: Set = ["model.layers.0.q_proj.weight", "model.layers.1.q_proj.weight"]
        let mapping = LoRAKeyMapping.resolve(adapterNames: ["layers.0.q_proj.weight", "layers.1.q_proj.weight", "layers.9.q_proj.weight"], baseNames: base)
        XCTAssertEqual(mapping.addedPrefix, "model.", "maps two of three; the third is reported as missing")
        XCTAssertEqual(LoRAKeyMapping.resolve(adapterNames: ["x.weight"], baseNames: base), .identity)
    }
}
