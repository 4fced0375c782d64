/// Every way a PyTorch checkpoint (a `.bin` of torch >= 1.6) is refused
/// once it is a readable zip archive: its pickle, the state dict it builds,
/// and the tensors' views of their storages. One case per rule.
public enum TorchCheckpointError: QConvError, Equatable {
    /// More than one `ARCHIVE/data.pkl` at the top of the archive.
    case severalPickles(file: String, entries: [String])
    /// The archive's `byteorder` entry says big-endian.
    case bigEndian(file: String)
    /// A `data.pkl` larger than any state dict's.
    case pickleTooLarge(file: String, length: UInt64)
    /// The pickle ends in the middle of an instruction (or has no `STOP`).
    case pickleTruncated(file: String, position: Int)
    /// An instruction a state dict never uses.
    case unsupportedOpcode(file: String, opcode: UInt8, position: Int)
    /// A name torch's safe loader does not allow: code the pickle would run.
    case globalRefused(file: String, global: String)
    /// A name torch's safe loader allows, for something other than a tensor of a state dict.
    case globalNotRead(file: String, global: String, what: String)
    /// `MARK`s nested deeper than any state dict's.
    case pickleTooDeep(file: String, position: Int, limit: Int)
    /// An instruction needs more values than the stack holds.
    case stackUnderflow(file: String, position: Int, opcode: UInt8)
    /// An instruction needs a `MARK` and there is none.
    case markMissing(file: String, position: Int)
    /// `BINGET` of a memo slot nothing was put in.
    case memoMissing(file: String, position: Int, index: Int)
    /// An instruction applied to a value of the wrong kind.
    case wrongOperand(file: String, position: Int, opcode: String, expected: String, found: String)
    /// An integer wider than 64 bits.
    case integerTooLarge(file: String, position: Int, bytes: Int)
    /// A string that is not UTF-8.
    case invalidText(file: String, position: Int)
    /// A call of an allowed function with arguments it does not take.
    case invalidCall(file: String, position: Int, function: String, reason: String)
    /// The pickle builds something other than a dict.
    case notAStateDict(file: String, found: String)
    /// A key of the state dict that is not a string.
    case keyNotString(file: String, found: String)
    /// A key that appears twice in the state dict.
    case duplicateKey(file: String, key: String)
    /// A value of the state dict that is not a tensor.
    case notATensor(file: String, key: String, found: String)
    /// A size, stride or offset below zero.
    case negativeNumber(file: String, tensor: String, field: String, value: Int)
    /// Sizes and strides of different lengths, or more dimensions than torch allows.
    case invalidRank(file: String, tensor: String, sizes: Int, strides: Int)
    /// A shape whose element or byte count overflows.
    case tensorTooLarge(file: String, tensor: String, shape: String)
    /// The storage the tensor views is not in the archive.
    case storageMissing(file: String, tensor: String, entry: String)
    /// The storage's bytes in the archive are not as many as its record says.
    case storageSizeMismatch(file: String, entry: String, declared: UInt64, actual: UInt64)
    /// One storage recorded with two types or sizes.
    case storageRedeclared(file: String, entry: String)
    /// The view reaches past the end of its storage.
    case viewOutsideStorage(file: String, tensor: String, lastElement: String, storageElements: Int)

    public var category: ErrorCategory { .invalidInput }

    public var description: String {
        switch self {
        case let .severalPickles(file, entries):
            return "\(file): several checkpoints in one archive (\(entries.joined(separator: ", "))); a PyTorch checkpoint has one data.pkl"
        case let .bigEndian(file):
            return "\(file): a big-endian PyTorch checkpoint, which qconv does not read (its tensors are little-endian only)"
        case let .pickleTooLarge(file, length):
            return "\(file): data.pkl holds \(length) bytes, more than the \(PickleMachine.maximumLength)-byte limit for a state dict"
        case let .pickleTruncated(file, position):
            return "\(file): data.pkl ends in the middle of the instruction at byte \(position)"
        case let .unsupportedOpcode(file, opcode, position):
            return "\(file): data.pkl: instruction 0x\(String(opcode, radix: 16)) at byte \(position) is not one a state dict uses; refused"
        case let .globalRefused(file, global):
            return "\(file): refused: the pickle calls \(global); qconv never runs code from a checkpoint (torch.load(weights_only=True) refuses it too)"
        case let .globalNotRead(file, global, what):
            return "\(file): the pickle uses \(global) (\(what)), which qconv does not read; it reads state dicts of plain tensors"
        case let .pickleTooDeep(file, position, limit):
            return "\(file): data.pkl nests deeper than \(limit) levels at byte \(position), deeper than any state dict"
        case let .stackUnderflow(file, position, opcode):
            return "\(file): data.pkl: instruction 0x\(String(opcode, radix: 16)) at byte \(position) needs more values than there are"
        case let .markMissing(file, position):
            return "\(file): data.pkl: the instruction at byte \(position) closes a mark that was never opened"
        case let .memoMissing(file, position, index):
            return "\(file): data.pkl: byte \(position) reads memo slot \(index), which was never set"
        case let .wrongOperand(file, position, opcode, expected, found):
            return "\(file): data.pkl: \(opcode) at byte \(position) needs \(expected), found \(found)"
        case let .integerTooLarge(file, position, bytes):
            return "\(file): data.pkl: a \(bytes)-byte integer at byte \(position), wider than any size or offset"
        case let .invalidText(file, position):
            return "\(file): data.pkl: the string at byte \(position) is not UTF-8"
        case let .invalidCall(file, position, function, reason):
            return "\(file): data.pkl: \(function) at byte \(position) \(reason)"
        case let .notAStateDict(file, found):
            return "\(file): the checkpoint holds \(found), not a state dict (a dict of tensors)"
        case let .keyNotString(file, found):
            return "\(file): a state dict key is \(found), not a string"
        case let .duplicateKey(file, key):
            return "\(file): tensor '\(key)': the state dict holds this key twice"
        case let .notATensor(file, key, found):
            return "\(file): '\(key)' is \(found), not a tensor; qconv reads state dicts of tensors (a training checkpoint holds more)"
        case let .negativeNumber(file, tensor, field, value):
            return "\(file): tensor '\(tensor)': \(field) is \(value), below zero"
        case let .invalidRank(file, tensor, sizes, strides):
            return "\(file): tensor '\(tensor)': \(sizes) sizes and \(strides) strides (they must match, and be at most 64)"
        case let .tensorTooLarge(file, tensor, shape):
            return "\(file): tensor '\(tensor)': shape \(shape) holds more elements or bytes than fit in 64 bits"
        case let .storageMissing(file, tensor, entry):
            return "\(file): tensor '\(tensor)': its storage '\(entry)' is not in the archive"
        case let .storageSizeMismatch(file, entry, declared, actual):
            return "\(file): storage '\(entry)' holds \(actual) bytes, but the pickle says \(declared)"
        case let .storageRedeclared(file, entry):
            return "\(file): storage '\(entry)' is described twice with different types or sizes"
        case let .viewOutsideStorage(file, tensor, lastElement, storageElements):
            return "\(file): tensor '\(tensor)': its view reaches element \(lastElement) of a storage of \(storageElements) elements"
        }
    }
}
