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
        case let error as SelectionError:
            return (wording(error), error.category.exitCode)
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
        default:
            return nil
        }
    }

    /// A selection error with the options that set the patterns.
    static func wording(_ error: SelectionError) -> String {
        switch error {
        case let .patternMatchesNothing(role, pattern, closest):
            let glob = pattern.hasPrefix(NamePatterns.Pattern.regexPrefix) || pattern.contains("*") ? ""
                : " (a glob matches whole names: '*\(pattern)*' matches the names that contain it)"
            return "--\(role.rawValue) '\(pattern)' matches no tensor\(glob)" + (closest.isEmpty ? "" : "; the closest names: \(closest.joined(separator: ", "))")
        case let .nothingToQuantize(patterns, reasons):
            let all = reasons.contains(TensorSelection.KeepReason.oneDimensional.rawValue) ? "; pass --all to quantize 1-D tensors too" : ""
            return "--only \(patterns.map { "'\($0)'" }.joined(separator: " ")) names no tensor that can be quantized "
                + "(those it names are kept: \(reasons.joined(separator: ", ")))\(all)"
        }
    }
}
