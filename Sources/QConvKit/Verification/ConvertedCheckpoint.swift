/// The converted side of a comparison: a qconv container or a safetensors
/// checkpoint (a dequantized or merged model).
public enum ConvertedCheckpoint {
    case container(ContainerFile)
    case safetensors(Checkpoint)

    /// Opens `path` as a container if it starts with the container magic, else as safetensors.
    public init(path: String) throws {
        self = ContainerFile.isContainer(path: path) ? .container(try ContainerFile(path: path)) : .safetensors(try Checkpoint(path: path))
    }

    public var path: String {
        switch self {
        case .container(let c): return c.path
        case .safetensors(let c): return c.path
        }
    }

    public var tensorNames: [String] {
        switch self {
        case .container(let c): return c.tensors.map(\.name)
        case .safetensors(let c): return c.tensors.map(\.name)
        }
    }

    /// A tensor's stored description: dtype and shape as the source had them, and the scheme.
    func describe(_ name: String) -> (info: TensorInfo, scheme: String)? {
        switch self {
        case .container(let c): return c.tensor(named: name).map { ($0.info, $0.scheme.rawValue) }
        case .safetensors(let c): return c.tensor(named: name).map { ($0.info, "safetensors") }
        }
    }
}
