/// A model folder's `config.json`, as transformers reads and writes it: its
/// name, the size past which a file is not one, a lenient look at its
/// members (for readers that only want a hint from it) and the way
/// transformers writes one. The bitsandbytes layout, FP8 checkpoints and
/// tied embeddings all go through here.
enum TransformersConfig {
    /// The file's name in a model folder.
    static let fileName = "config.json"
    /// Larger is not a config.
    static let maximumSize: UInt64 = 16 << 20

    /// `model`'s config.json among its side files, when it has one no larger than a config.
    static func file(of model: Model) -> SideFile? {
        model.sideFiles.first { $0.name == fileName && $0.size <= maximumSize }
    }

    /// The top-level object of `model`'s config.json; nil when there is
    /// none or it is not a JSON object.
    static func object(of model: Model) -> JSONObject? {
        guard let file = file(of: model), let bytes = try? file.readAll() else { return nil }
        return (try? JSONParser.parse(bytes))?.objectValue
    }

    /// `object` written as transformers writes configs: Python's
    /// `json.dumps(indent=2, sort_keys=True)` and a newline, each key once.
    static func text(_ object: JSONObject) -> [UInt8] {
        Array((JSONWriter.serialize(pythonValue(.object(object)), style: .python, sortKeys: true) + "\n").utf8)
    }

    /// `object` without its `quantization_config` (the config of a model
    /// stored unquantized), written as `text` writes it.
    static func withoutQuantization(_ object: JSONObject) -> [UInt8] {
        var object = object
        object.members.removeAll { $0.key == "quantization_config" }
        return text(object)
    }

    /// The value as Python's `json.load` holds it: each key once (in its first
    /// place, with its last value) and floats as Python writes them back.
    private static func pythonValue(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let object):
            var result = JSONObject()
            var position: [String: Int] = [:]
            for member in object.members {
                let converted = pythonValue(member.value)
                if let i = position[member.key] {
                    result.members[i].value = converted
                } else {
                    position[member.key] = result.members.count
                    result.append(member.key, converted)
                }
            }
            return .object(result)
        case .array(let items):
            return .array(items.map(pythonValue))
        case .number(let number):
            if number.isInteger { return .number(Int(number.text).map { JSONNumber($0) } ?? number) }
            return .number(number.doubleValue.map { JSONNumber(python: $0) } ?? number)
        case .null, .bool, .string:
            return value
        }
    }
}
