/// Why two checkpoints could not be compared at all (exit 3).
public enum VerificationError: QConvError, Equatable {
    /// A tensor of one side has no counterpart in the other.
    case tensorMissing(file: String, tensor: String, presentIn: String)
    /// The two sides disagree on a tensor's shape.
    case shapeMismatch(tensor: String, original: String, converted: String)
    /// The name patterns that choose the tensors to compare matched nothing.
    case nothingSelected(patterns: [String])

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .tensorMissing(file, tensor, presentIn):
            return "\(file): tensor '\(tensor)' is missing (it is in \(presentIn))"
        case let .shapeMismatch(tensor, original, converted):
            return "tensor '\(tensor)': shape \(converted) in the converted checkpoint, \(original) in the original"
        case let .nothingSelected(patterns):
            return "the name patterns \(patterns.joined(separator: " ")) match no tensor"
        }
    }
}
