/// A PyTorch checkpoint as torch >= 1.6 saves it (`torch.save`,
/// `pytorch_model.bin`, `adapter_model.bin`): a zip archive of stored entries
/// under one folder, `ARCHIVE/data.pkl` (a pickle of the state dict) and
/// `ARCHIVE/data/KEY` (one little-endian storage per key).
///
/// Opening reads the zip directory and the pickle, never a storage: the
/// pickle is interpreted by `PickleMachine`, which runs nothing, and every
/// tensor is checked against the storage it views. Tensors come in the
/// state dict's order; several may view one storage.
public final class TorchCheckpointFile {
    /// One tensor of the state dict and where its bytes are.
    public struct Tensor: Sendable {
        public enum Placement: Sendable, Equatable {
            /// Its elements in order, starting at this absolute file offset.
            case contiguous(offset: UInt64)
            /// A view whose first element is at `first` and whose others follow `layout`.
            case strided(first: UInt64, layout: StridedLayout)
        }

        public let info: TensorInfo
        public let placement: Placement
        /// The storage it views (`ARCHIVE/data/KEY`): tensors with the same one share bytes.
        public let storage: String
    }

    public let path: String
    public let file: ReadableFile
    public let tensors: [Tensor]

    /// Opens and validates `path`.
    ///
    /// - Throws: `ModelFormatError.unsupportedFormat` for a zip archive
    ///   without `data.pkl`, `ZipArchiveError` and `TorchCheckpointError`
    ///   for anything else that breaks a rule, `IOError` when reading fails.
    public init(path: String) throws {
        self.path = path
        file = try ReadableFile(path: path)
        let archive = try ZipArchive(file: file)
        let pickles = archive.entries.map(\.name).filter { name in
            name.hasSuffix("/data.pkl") && name.split(separator: "/", omittingEmptySubsequences: false).count == 2
        }
        guard let pickleName = pickles.first else {
            throw ModelFormatError.unsupportedFormat(path: path, what: "a zip archive that is not a PyTorch checkpoint (it has no data.pkl)")
        }
        guard pickles.count == 1 else { throw TorchCheckpointError.severalPickles(file: path, entries: pickles) }
        let folder = String(pickleName.dropLast("data.pkl".count))
        if let order = archive.entry(named: folder + "byteorder"), order.length <= 16, try archive.read(order) == Array("big".utf8) {
            throw TorchCheckpointError.bigEndian(file: path)
        }
        let pickle = archive.entry(named: pickleName)!
        guard pickle.length <= UInt64(PickleMachine.maximumLength) else { throw TorchCheckpointError.pickleTooLarge(file: path, length: pickle.length) }
        var machine = PickleMachine(bytes: try archive.read(pickle), file: path)
        let root = try machine.run()
        tensors = try Self.resolve(root, objects: machine.objects, archive: archive, folder: folder)
    }

    /// The state dict's tensors, each checked against its storage.
    private static func resolve(_ root: PickleValue, objects: [PickleObject], archive: ZipArchive, folder: String) throws -> [Tensor] {
        let path = archive.file.path
        guard case .object(let index) = root, case .dict(let entries) = objects[index] else {
            throw TorchCheckpointError.notAStateDict(file: path, found: root.kindDescription(in: objects))
        }
        var names = Set<String>()
        var storages: [String: TorchStorage] = [:]
        var tensors: [Tensor] = []
        for (key, value) in entries {
            guard case .string(let name) = key else { throw TorchCheckpointError.keyNotString(file: path, found: key.kindDescription(in: objects)) }
            guard names.insert(name).inserted else { throw TorchCheckpointError.duplicateKey(file: path, key: name) }
            guard case .tensor(let tensor) = value else {
                throw TorchCheckpointError.notATensor(file: path, key: name, found: value.kindDescription(in: objects))
            }
            let entryName = folder + "data/" + tensor.storage.key
            guard let entry = archive.entry(named: entryName) else {
                throw TorchCheckpointError.storageMissing(file: path, tensor: name, entry: entryName)
            }
            if let known = storages[entryName], known != tensor.storage { throw TorchCheckpointError.storageRedeclared(file: path, entry: entryName) }
            storages[entryName] = tensor.storage
            let declared = tensor.storage.byteCount.map(UInt64.init) ?? .max
            guard declared == entry.length else {
                throw TorchCheckpointError.storageSizeMismatch(file: path, entry: entryName, declared: declared, actual: entry.length)
            }
            tensors.append(try place(tensor, named: name, in: entry, file: path))
        }
        return tensors
    }

    /// Where a tensor's elements are in its storage's entry, after checking
    /// that the view lies inside the storage.
    private static func place(_ tensor: TorchTensor, named name: String, in entry: ZipArchive.Entry, file path: String) throws -> Tensor {
        let shape = tensor.shape, strides = tensor.strides
        guard shape.count == strides.count, shape.count <= 64 else {
            throw TorchCheckpointError.invalidRank(file: path, tensor: name, sizes: shape.count, strides: strides.count)
        }
        for (k, size) in shape.enumerated() where size < 0 { throw TorchCheckpointError.negativeNumber(file: path, tensor: name, field: "size[\(k)]", value: size) }
        for (k, stride) in strides.enumerated() where stride < 0 {
            throw TorchCheckpointError.negativeNumber(file: path, tensor: name, field: "stride[\(k)]", value: stride)
        }
        guard tensor.offset >= 0 else { throw TorchCheckpointError.negativeNumber(file: path, tensor: name, field: "storage offset", value: tensor.offset) }
        let info = TensorInfo(name: name, dtype: tensor.dtype, shape: shape)
        let shapeText = info.shapeDescription
        var count = 1
        for size in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow else { throw TorchCheckpointError.tensorTooLarge(file: path, tensor: name, shape: shapeText) }
            count = product
        }
        guard let width = tensor.dtype.byteWidth, byteCount(of: tensor.dtype, elementCount: count) != nil else {
            throw TorchCheckpointError.tensorTooLarge(file: path, tensor: name, shape: shapeText)
        }
        let storageElements = Int(entry.length) / width
        if count > 0 {
            // The last element the view touches: offset + Σ (size - 1) × stride, in 64 bits or refused.
            var last = tensor.offset
            var overflow = false
            for (size, stride) in zip(shape, strides) {
                let (step, o1) = (size - 1).multipliedReportingOverflow(by: stride)
                let (sum, o2) = last.addingReportingOverflow(step)
                overflow = overflow || o1 || o2
                last = sum
            }
            guard !overflow, last < storageElements else {
                throw TorchCheckpointError.viewOutsideStorage(file: path, tensor: name, lastElement: overflow ? "beyond 2^63" : String(last),
                                                              storageElements: storageElements)
            }
        }
        let first = entry.dataOffset + UInt64(count > 0 ? tensor.offset * width : 0)
        let placement: Tensor.Placement = StridedLayout.isContiguous(shape: shape, strides: strides)
            ? .contiguous(offset: first) : .strided(first: first, layout: StridedLayout(shape: shape, strides: strides))
        return Tensor(info: info, placement: placement, storage: entry.name)
    }
}
