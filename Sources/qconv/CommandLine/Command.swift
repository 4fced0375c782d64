import QConvKit

/// A `qconv` subcommand: its command-line shape and what it does.
protocol Command {
    static var spec: CommandSpec { get }
    /// Runs the command; returns the exit code (0, or 1 for a failed check).
    static func run(_ arguments: ParsedArguments, console: Console) throws -> Int32
}

/// Options shared by the conversion commands, so every command spells them alike.
enum CommonOptions {
    static let json = OptionSpec.flag("--json", "Print a JSON report on stdout instead of text.")
    static let quiet = OptionSpec.flag("--quiet", "Print nothing but errors (and --json output); no progress line.")
    static let force = OptionSpec.flag("--force", "Replace OUT if it exists.")
    static let threads = OptionSpec.value("--threads", "N", "Use at most N threads (default: every core).")
}
