import Glibc
import QConvCommandLine
import QConvKit

/// Every subcommand, in the order `qconv --help` lists them.
let commands: [any Command.Type] = [
    InspectCommand.self,
    ToNF4Command.self,
    ToFP4Command.self,
    ToInt8Command.self,
    DequantCommand.self,
    ToSafetensorsCommand.self,
    VerifyCommand.self,
    MergeLoRACommand.self,
]

func topLevelHelp() -> String {
    var lines = [
        "qconv \(QConvVersion.string): quantize, verify and merge model weights without loading the model.",
        "",
        "usage: qconv COMMAND [arguments] [options]",
        "",
        "commands:",
    ]
    let width = commands.map { $0.spec.name.count }.max()! + 2
    for command in commands {
        let name = command.spec.name
        lines.append("  " + name + String(repeating: " ", count: width - name.count) + command.spec.abstract)
    }
    lines += [
        "",
        "options:",
        "  --help      Show this help; 'qconv help COMMAND' or 'qconv COMMAND --help' shows a command's options.",
        "  --version   Print the version.",
        "",
        "exit codes: 0 ok, 1 a check failed, 2 usage error, 3 invalid or corrupt input, 4 I/O error.",
    ]
    return lines.joined(separator: "\n")
}

/// The usage error for a command qconv does not have, with the closest ones.
func unknownCommand(_ name: String) -> Int32 {
    Console.error("unknown command '\(name)'\(Suggestions.hint(for: name, among: commands.map { $0.spec.name }))\nsee 'qconv --help'")
    return UsageError.exitCode
}

func runMain() -> Int32 {
    Interrupts.install()
    let arguments = Array(CommandLine.arguments.dropFirst())
    guard let first = arguments.first else {
        fputs(topLevelHelp() + "\n", stderr)
        return UsageError.exitCode
    }
    switch first {
    case "--help", "-h":
        print(topLevelHelp())
        return 0
    case "help":
        // `qconv help` and `qconv help COMMAND`.
        guard arguments.count > 1 else {
            print(topLevelHelp())
            return 0
        }
        guard let command = commands.first(where: { $0.spec.name == arguments[1] }) else { return unknownCommand(arguments[1]) }
        print(command.spec.help)
        return 0
    case "--version", "-V", "version":
        print("qconv \(QConvVersion.string)")
        return 0
    default:
        break
    }
    if let problem = CPUCheck.problem() {
        Console.error(problem)
        return 4
    }
    guard let command = commands.first(where: { $0.spec.name == first }) else { return unknownCommand(first) }
    let rest = Array(arguments.dropFirst())
    if rest.contains("--help") || rest.contains("-h") {
        print(command.spec.help)
        return 0
    }
    do {
        let status = try command.main(rest)
        fflush(stdout)
        return status
    } catch {
        Interrupts.waitIfStopping()
        let (text, code) = ErrorWording.message(for: error)
        Console.error(text)
        return code
    }
}

exit(runMain())
