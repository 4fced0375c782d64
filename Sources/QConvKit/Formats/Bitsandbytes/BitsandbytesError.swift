/// Why a bitsandbytes checkpoint would not load (exit 3), one case per rule
/// of `qconv verify` on such a checkpoint (docs/CLI.md lists them), and why a
/// model cannot be written in that layout (exit 2). Every description names
/// the file and the weight.
public enum BitsandbytesError: QConvError, Equatable {
    /// A piece the weight needs is not in the checkpoint.
    case pieceMissing(file: String, weight: String, piece: String, why: String)
    /// A tensor named like a piece of a weight that does not use it.
    case pieceUnexpected(file: String, weight: String, piece: String, why: String)
    /// The quant-state blob is not what bitsandbytes reads.
    case quantStateInvalid(file: String, weight: String, piece: String, reason: String)
    /// The quant-state blob and the weight's pieces tell different stories.
    case quantStateDisagrees(file: String, weight: String, reason: String)
    /// A piece has another dtype or shape than the weight's quant state implies.
    case pieceLayout(file: String, weight: String, piece: String, found: String, expected: String)
    /// A piece whose values bitsandbytes would not accept (a code table, a weight format).
    case pieceContents(file: String, weight: String, piece: String, reason: String)
    /// The pieces of one weight are in different shards; transformers gathers
    /// them from the shard that holds the weight.
    case piecesInSeveralShards(folder: String, weight: String, shards: [String])
    /// config.json cannot be read as a model configuration.
    case configInvalid(file: String, reason: String)
    /// config.json's quantization_config does not describe the weights.
    case configDisagrees(file: String, weight: String, reason: String)
    /// A tensor to be written in the layout that transformers does not quantize.
    case notALinearWeight(tensor: String, reason: String)
    /// A stored tensor whose scheme has no bitsandbytes form.
    case noBitsandbytesForm(path: String, tensor: String, reason: String)
    /// Quantized tensors of different kinds (nf4 and fp4, double quant or not,
    /// 4-bit and int8), which one quantization_config cannot describe.
    case mixedSchemes(tensor: String, other: String)

    public var category: ErrorCategory {
        switch self {
        case .notALinearWeight, .noBitsandbytesForm, .mixedSchemes: return .usage
        default: return .invalidInput
        }
    }

    /// The weight (or tensor) the problem is about.
    public var weight: String {
        switch self {
        case let .pieceMissing(_, weight, _, _), let .pieceUnexpected(_, weight, _, _), let .quantStateInvalid(_, weight, _, _),
             let .quantStateDisagrees(_, weight, _), let .pieceLayout(_, weight, _, _, _), let .pieceContents(_, weight, _, _),
             let .piecesInSeveralShards(_, weight, _), let .configDisagrees(_, weight, _):
            return weight
        case .configInvalid: return ""
        case let .notALinearWeight(tensor, _), let .noBitsandbytesForm(_, tensor, _), let .mixedSchemes(tensor, _): return tensor
        }
    }

    /// A short name of the rule, for JSON reports ("piece_missing").
    public var rule: String {
        switch self {
        case .pieceMissing: return "piece_missing"
        case .pieceUnexpected: return "piece_unexpected"
        case .quantStateInvalid: return "quant_state_invalid"
        case .quantStateDisagrees: return "quant_state_disagrees"
        case .pieceLayout: return "piece_layout"
        case .pieceContents: return "piece_contents"
        case .piecesInSeveralShards: return "pieces_in_several_shards"
        case .configInvalid: return "config_invalid"
        case .configDisagrees: return "config_disagrees"
        case .notALinearWeight: return "not_a_linear_weight"
        case .noBitsandbytesForm: return "no_bitsandbytes_form"
        case .mixedSchemes: return "mixed_schemes"
        }
    }

    public var description: String {
        switch self {
        case let .pieceMissing(file, weight, piece, why):
            return "\(file): weight '\(weight)': '\(piece)' is missing (\(why))"
        case let .pieceUnexpected(file, weight, piece, why):
            return "\(file): weight '\(weight)': unexpected tensor '\(piece)' (\(why))"
        case let .quantStateInvalid(file, weight, piece, reason):
            return "\(file): weight '\(weight)': its quant state '\(piece)' \(reason)"
        case let .quantStateDisagrees(file, weight, reason):
            return "\(file): weight '\(weight)': \(reason)"
        case let .pieceLayout(file, weight, piece, found, expected):
            return "\(file): weight '\(weight)': '\(piece)' is \(found), expected \(expected)"
        case let .pieceContents(file, weight, piece, reason):
            return "\(file): weight '\(weight)': '\(piece)' \(reason)"
        case let .piecesInSeveralShards(folder, weight, shards):
            return "\(folder): weight '\(weight)': its pieces are split across shards \(shards.joined(separator: ", ")); "
                + "transformers loads a weight's pieces from the shard that holds it"
        case let .configInvalid(file, reason):
            return "\(file): \(reason)"
        case let .configDisagrees(file, weight, reason):
            return "\(file): weight '\(weight)': \(reason)"
        case let .notALinearWeight(tensor, reason):
            return "tensor '\(tensor)': \(reason); transformers quantizes only the weights of linear layers"
        case let .noBitsandbytesForm(path, tensor, reason):
            return "\(path): tensor '\(tensor)' \(reason), which has no bitsandbytes form"
        case let .mixedSchemes(tensor, other):
            return "tensor '\(tensor)' is stored with another scheme than '\(other)'; one quantization_config describes every weight "
                + "of a bitsandbytes checkpoint"
        }
    }
}
