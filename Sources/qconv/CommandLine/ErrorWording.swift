import QConvCommandLine
import QConvKit

/// How an error reaches the user: the library's description, with the
/// command-line option that changes the outcome where there is one (the
/// library never names options), and the exit code.
enum ErrorWording {
    static func message(for error: Error) -> (text: String, exitCode: Int32) {
        switch error {
        case let usage as UsageError:
            return (usage.message, UsageError.exitCode)
        case let VerificationError.nothingSelected(patterns):
            return ("--only \(patterns.joined(separator: " ")) matches no tensor", VerificationError.nothingSelected(patterns: patterns).category.exitCode)
        case let error as QConvError:
            return (error.description + (hint(for: error) ?? ""), error.category.exitCode)
        default:
            return ("\(error)", 3)
        }
    }

    /// What to add to a library error's description.
    static func hint(for error: QConvError) -> String? {
        switch error {
        case OutputError.exists:
            return "; pass --force to replace it"
        case ConversionError.nonFiniteValue:
            return " (pass --allow-nonfinite to quantize anyway)"
        case ConversionError.float16Overflow:
            return " (keep the tensor unquantized with --skip)"
        case LoRAMergeError.nonFiniteResult, LoRAMergeError.nonFiniteRequantization:
            return " (pass --allow-nonfinite to write them anyway)"
        case LoRAMergeError.requantizationOverflow:
            return " (pass --allow-nonfinite to write it anyway)"
        case ModelFormatError.notAContainer:
            return "; 'qconv to-safetensors' writes any model qconv reads as safetensors"
        default:
            return nil
        }
    }
}
