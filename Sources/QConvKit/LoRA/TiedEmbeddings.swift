/// A base whose config.json says `"tie_word_embeddings": true`: its output
/// embedding (`lm_head.weight`) is its input embedding (`embed_tokens`,
/// `wte`, ...), usually stored once, under the input's name.
///
/// An adapter that changes either side (LoRA on `embed_tokens` or `lm_head`,
/// `modules_to_save: ["lm_head"]`) was trained with the two apart: LoRA on
/// the embedding changes the lookup only, a saved `lm_head` the projection
/// only. A merged checkpoint that stays tied loses one of the two changes when
/// transformers loads it (it ties them again). So such a merge unties the
/// model: both tensors are written (the output one made from the input one
/// when the base's files lack it) and the config says
/// `"tie_word_embeddings": false`, its text otherwise unchanged. An adapter
/// that changes neither leaves the model as it was.
public struct TiedEmbeddings: Equatable, Sendable {
    /// The output embedding transformers ties to the input one.
    public static let outputName = "lm_head.weight"
    /// Input embeddings, by the end of their names, in the order they are looked for.
    public static let inputSuffixes = ["embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight", "shared.weight"]

    /// The input embedding's tensor name.
    public let input: String
    public let output: String
    /// Whether the base's files store the output embedding (otherwise it is made from the input's).
    public let outputStored: Bool

    /// The tied pair of `model`, or nil when its config.json does not say
    /// `"tie_word_embeddings": true` (the last such member, as Python reads
    /// it) or no input embedding is found.
    public static func detect(in model: Model) throws -> TiedEmbeddings? {
        guard let object = TransformersConfig.object(of: model),
              object.members.last(where: { $0.key == "tie_word_embeddings" })?.value == .bool(true) else { return nil }
        let stored = model.tensor(named: outputName) != nil
        for suffix in inputSuffixes {
            if let tensor = model.tensors.first(where: { ($0.name == suffix || $0.name.hasSuffix("." + suffix)) && $0.info.shape.count == 2 }) {
                return TiedEmbeddings(input: tensor.name, output: outputName, outputStored: stored)
            }
        }
        return nil
    }

    /// Whether a merge plan changes either side.
    public func isChanged(by plan: LoRAMergePlan) -> Bool {
        plan.change(for: input) != nil || plan.change(for: output) != nil
    }

    /// `model` with the output embedding as a tensor of its own when its
    /// files lack it: the input's stored parts under the output's name, last
    /// in the last file (where transformers puts `lm_head.weight`).
    public func withOutputTensor(_ model: Model) -> Model {
        guard !outputStored, let tensor = model.tensor(named: input) else { return model }
        let info = TensorInfo(name: output, dtype: tensor.info.dtype, shape: tensor.info.shape)
        let parts = zip(tensor.parts, tensor.scheme.parts(for: info)).map { StoredPart(layout: $1, bytes: $0.bytes) }
        let last = model.files.count - 1
        var files = model.files
        files[last] = ModelFile(name: files[last].name, path: files[last].path, size: files[last].size, tensorCount: files[last].tensorCount + 1)
        return model.replacing(files: files, tensors: model.tensors + [ModelTensor(info: info, scheme: tensor.scheme, parts: parts, file: last)])
    }

    /// `model` untied: the output tensor as `withOutputTensor`, and its
    /// config.json with `"tie_word_embeddings": false` (made in memory).
    public func untie(_ model: Model) throws -> Model {
        let withOutput = withOutputTensor(model)
        var sideFiles = withOutput.sideFiles
        if let index = sideFiles.firstIndex(where: { $0.name == TransformersConfig.fileName }),
           let edited = JSONTextEditing.replacingTopLevelValues(of: "tie_word_embeddings", in: try sideFiles[index].readAll(), with: "false") {
            sideFiles[index] = SideFile(name: TransformersConfig.fileName, generated: edited)
        }
        return withOutput.replacing(sideFiles: sideFiles)
    }

    /// The JSON report's `untied` member.
    public var json: JSONValue {
        .object(["input": .string(input), "output": .string(output), "output_created": .bool(!outputStored)])
    }
}
