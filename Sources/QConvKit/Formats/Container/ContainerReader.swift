/// Reads a qconv container as a `Model`: each tensor with its scheme and its
/// parts' regions, the embedded files as side files, every region checked
/// against its checksum when it is read.
public enum ContainerReader: ModelReader {
    /// A file that starts with the container magic `QCONVFMT`.
    public static func recognize(_ probe: FormatProbe) -> ModelFormat? {
        probe.starts(with: ContainerFormat.magic) ? .container : nil
    }

    public static func open(_ probe: FormatProbe, as format: ModelFormat) throws -> Model {
        model(of: try ContainerFile(path: probe.path))
    }

    /// The model view of an opened container.
    public static func model(of container: ContainerFile) -> Model {
        let tensors = container.tensors.map { tensor in
            ModelTensor(info: tensor.info, scheme: tensor.scheme,
                        parts: tensor.parts.map { StoredPart(layout: $0.layout, bytes: container.bytes(of: $0, tensor: tensor.name)) }, file: 0)
        }
        let sideFiles = container.header.files.map { SideFile(name: $0.name, size: $0.length, bytes: container.bytes(of: $0)) }
        let file = ModelFile(name: FileSystem.baseName(of: container.path), path: container.path, size: container.file.size,
                             tensorCount: container.tensors.count)
        return Model(path: container.path, format: .container, files: [file], sideFiles: sideFiles, metadata: container.header.metadata,
                     tensors: tensors, provenance: container.header.provenance, inputPaths: [container.path])
    }
}
