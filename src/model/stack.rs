//! From a stack of layers to the tree: [`Model::from_layers`] flattens the
//! lower layers once (whiteouts, opaque directories, redirects, hard links).

use super::*;

impl Model {
    /// Flattens `lowers` (top first) into the tree a view over them with an
    /// empty upper shows.
    ///
    /// # Errors
    /// Errors of the layers (reframed as a lookup of the merged path, with
    /// the layer's index); `EINVAL` for a name that is not a valid name or a
    /// malformed redirect.
    pub fn from_layers(lowers: &[Arc<dyn Layer>], options: ViewOptions) -> Result<Model> {
        let mut model = Model::empty(options);
        let root_path = LayerPath::root();
        let mut root_stack = Vec::new();
        for (index, layer) in lowers.iter().enumerate() {
            let entry = layer
                .lookup(&root_path)
                .map_err(|e| layer_error(e, index, &root_path))?;
            if let Some(Entry::Node(node)) = entry
                && node.meta.is_dir()
            {
                root_stack.push((index, root_path.clone()));
                if node.opaque {
                    break;
                }
            }
        }
        model.dir_mut(ROOT).lower_layers = root_stack.len() as u64;
        let flatten = Flatten {
            lowers,
            layers: root_stack.iter().map(|(l, _)| *l).collect(),
        };
        let keep = options.hard_links == HardLinkCopyUp::Keep;
        // Lower inodes already seen (layer, ino) -> identity, for `Keep`.
        let mut inodes: BTreeMap<(usize, u64), Id> = BTreeMap::new();
        let mut work = vec![(ROOT, root_stack, root_path)];
        while let Some((dir, stack, merged)) = work.pop() {
            let mut names = BTreeSet::new();
            for (l, p) in &stack {
                let listing = lowers[*l]
                    .read_dir(p)
                    .map_err(|e| layer_error(e, *l, &merged))?;
                names.extend(listing.entries.into_iter().map(|(name, _)| name));
            }
            for name in names {
                validate_name(name.as_bytes())
                    .map_err(|e| e.reframe(Operation::Lookup, merged.as_name()))?;
                let child_path = merged.join_unchecked(&name);
                match flatten.child(&stack, &name, &child_path)? {
                    Found::Nothing => {}
                    Found::Dir { stack, top } => {
                        let id = model.alloc();
                        model.dirs.insert(
                            id,
                            DirNode {
                                attrs: Attrs::of(&top.meta),
                                entries: BTreeMap::new(),
                                lower_layers: stack.len() as u64,
                                in_upper: false,
                            },
                        );
                        model.dir_mut(dir).entries.insert(name, Child::Dir(id));
                        work.push((id, stack, child_path));
                    }
                    Found::Object { layer, path, node } => {
                        let key = (layer, node.meta.ino);
                        let shared = if keep && node.meta.nlink > 1 {
                            inodes.get(&key).copied()
                        } else {
                            None
                        };
                        let id = match shared {
                            Some(id) => {
                                model.obj_mut(id).names += 1;
                                id
                            }
                            None => {
                                let obj = read_object(&*lowers[layer], &path, &node)
                                    .map_err(|e| layer_error(e, layer, &child_path))?;
                                let id = model.alloc();
                                model.objs.insert(id, obj);
                                if keep && node.meta.nlink > 1 {
                                    inodes.insert(key, id);
                                }
                                id
                            }
                        };
                        model.dir_mut(dir).entries.insert(name, Child::Obj(id));
                    }
                }
            }
        }
        Ok(model)
    }
}

/// A layer's error while flattening, reframed as a lookup of the merged path.
fn layer_error(err: Error, layer: usize, merged: &LayerPath) -> Error {
    err.reframe(Operation::Lookup, merged.as_name())
        .with_layer_index(layer)
}

/// The flatten of a lower stack (the "Flatten" rules of the contract).
struct Flatten<'a> {
    pub(super) lowers: &'a [Arc<dyn Layer>],
    /// The layers of the root's stack, top first: no other layer shows.
    pub(super) layers: Vec<usize>,
}

/// Where the next layers look for a child.
enum Target {
    /// This name in each layer's path of the parent.
    Relative(NameBuf),
    /// This exact path from each layer's root (after an absolute redirect).
    Absolute(LayerPath),
}

/// What a merged directory shows at one name.
enum Found {
    Nothing,
    /// A directory: its stack (layer, path in that layer), top first, and
    /// the topmost node (its metadata is the merged directory's).
    Dir {
        stack: Vec<(usize, LayerPath)>,
        top: Node,
    },
    /// A non-directory, from this layer and path.
    Object {
        layer: usize,
        path: LayerPath,
        node: Node,
    },
}

impl Flatten<'_> {
    /// Looks up `name` in the merged directory whose stack is `parent`.
    pub(super) fn child(
        &self,
        parent: &[(usize, LayerPath)],
        name: &Name,
        merged: &LayerPath,
    ) -> Result<Found> {
        let mut target = Target::Relative(name.to_owned());
        let mut stack = Vec::new();
        let mut top: Option<Node> = None;
        for &layer in &self.layers {
            // After an absolute redirect the kernel walks each layer from its
            // root: a whiteout or non-directory on the way ends the search,
            // an opaque directory on the way ends it after this layer, a
            // redirect on the way rewrites the path for the layers below.
            let mut opaque_on_way = false;
            let mut next = None;
            let (path, entry) = match &target {
                Target::Relative(name) => match parent.iter().find(|(l, _)| *l == layer) {
                    Some((_, p)) => {
                        let path = p.join_unchecked(name);
                        let entry = self.lowers[layer]
                            .lookup(&path)
                            .map_err(|e| layer_error(e, layer, merged))?;
                        (path, entry)
                    }
                    None => continue,
                },
                Target::Absolute(path) => {
                    let walked = walk_absolute(&*self.lowers[layer], path)
                        .map_err(|e| layer_error(e, layer, merged))?;
                    let Some(entry) = walked.entry else {
                        if walked.stop {
                            break;
                        }
                        if walked.opaque_on_way {
                            break;
                        }
                        target = Target::Absolute(walked.next);
                        continue;
                    };
                    opaque_on_way = walked.opaque_on_way;
                    next = Some(walked.next);
                    (walked.at, Some(entry))
                }
            };
            if let Some(next) = next.take() {
                target = Target::Absolute(next);
            }
            match entry {
                None => {}
                Some(Entry::Whiteout) => break,
                Some(Entry::Node(node)) if !node.meta.is_dir() => {
                    if top.is_none() {
                        return Ok(Found::Object { layer, path, node });
                    }
                    break;
                }
                Some(Entry::Node(node)) => {
                    let opaque = node.opaque;
                    let redirect = node.redirect.clone();
                    stack.push((layer, path.clone()));
                    top.get_or_insert(node);
                    if opaque {
                        break;
                    }
                    if let Some(redirect) = redirect {
                        let base = match &target {
                            Target::Absolute(p) => p.clone(),
                            Target::Relative(_) => path.clone(),
                        };
                        target = redirect_target(&redirect, &target, &base).ok_or_else(|| {
                            Error::new(ErrorKind::InvalidInput, Operation::Lookup, merged.as_name())
                                .with_layer_index(layer)
                                .with_detail(format!("invalid redirect `{redirect}`"))
                        })?;
                    }
                    if opaque_on_way {
                        break;
                    }
                }
            }
        }
        Ok(match top {
            Some(top) => Found::Dir { stack, top },
            None => Found::Nothing,
        })
    }
}

/// What an absolute lookup finds in one layer.
struct AbsoluteWalk {
    /// The path walked to (the last component's path in this layer).
    pub(super) at: LayerPath,
    /// What the layer holds there; `None` if the walk did not get there.
    pub(super) entry: Option<Entry>,
    /// A whiteout or non-directory on the way: no layer below shows it.
    pub(super) stop: bool,
    /// An opaque directory on the way: no layer below this one shows it.
    pub(super) opaque_on_way: bool,
    /// The path for the layers below (rewritten by redirects on the way).
    pub(super) next: LayerPath,
}

/// Walks `path` in one layer from its root, as the kernel's
/// `ovl_lookup_layer` does for an absolute redirect.
fn walk_absolute(layer: &dyn Layer, path: &LayerPath) -> Result<AbsoluteWalk> {
    let names: Vec<&Name> = path.names().collect();
    let mut at = LayerPath::root();
    let mut next: Vec<NameBuf> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut opaque_on_way = false;
    let result = |at, entry, stop, opaque_on_way, next: &[NameBuf]| {
        Ok(AbsoluteWalk {
            at,
            entry,
            stop,
            opaque_on_way,
            next: LayerPath::from_names(next.iter())?,
        })
    };
    for (i, name) in names.iter().enumerate() {
        at = at.join_unchecked(name);
        let entry = layer.lookup(&at)?;
        if i + 1 == names.len() {
            return result(at, entry, false, opaque_on_way, &next);
        }
        match entry {
            None => return result(at, None, false, opaque_on_way, &next),
            Some(Entry::Whiteout) => return result(at, None, true, opaque_on_way, &next),
            Some(Entry::Node(node)) if !node.meta.is_dir() => {
                return result(at, None, true, opaque_on_way, &next);
            }
            Some(Entry::Node(node)) => {
                if node.opaque {
                    opaque_on_way = true;
                } else if let Some(r) = &node.redirect {
                    // The rest of the path follows the redirected one.
                    let keep = next.len() - (names.len() - i);
                    let rest: Vec<NameBuf> = next[keep + 1..].to_vec();
                    let mut rewritten: Vec<NameBuf> = match r.target() {
                        RedirectTarget::Absolute(p) => {
                            opaque_on_way = false;
                            p.names().map(Name::to_owned).collect()
                        }
                        // The kernel rewrites its lookup name with the
                        // stored bytes even where it will not follow them.
                        RedirectTarget::Invalid => {
                            opaque_on_way = false;
                            r.to_bytes()
                                .split(|&b| b == b'/')
                                .filter(|s| !s.is_empty())
                                .map(NameBuf::from)
                                .collect()
                        }
                        RedirectTarget::Name(_) | RedirectTarget::Ignored => {
                            let mut p = next[..keep].to_vec();
                            p.push(NameBuf::from(r.to_bytes().as_ref()));
                            p
                        }
                    };
                    rewritten.extend(rest);
                    next = rewritten;
                }
            }
        }
    }
    result(at, None, false, opaque_on_way, &next)
}

/// Where a redirect sends the lookup: a path from the root (not the root
/// itself), or a single valid name relative to the parent (after an
/// absolute redirect, the parent is that of `path`). `None` if the model
/// does not follow it: the model refuses what the kernel ignores.
fn redirect_target(redirect: &Redirect, current: &Target, path: &LayerPath) -> Option<Target> {
    let name = match redirect.target() {
        RedirectTarget::Absolute(absolute) if !absolute.is_root() => {
            return Some(Target::Absolute(absolute.clone()));
        }
        RedirectTarget::Name(name) if validate_name(name).is_ok() => name,
        _ => return None,
    };
    Some(match current {
        Target::Relative(_) => Target::Relative(name.to_owned()),
        Target::Absolute(_) => Target::Absolute(path.parent()?.join_unchecked(name)),
    })
}

/// Reads a lower non-directory into a fresh identity (still in the lower).
fn read_object(layer: &dyn Layer, path: &LayerPath, node: &Node) -> Result<ObjNode> {
    let file_type = node.meta.file_type;
    let body = match file_type {
        FileType::File => Body::File(read_file(layer, path)?),
        FileType::Symlink => Body::Symlink(layer.read_link(path)?),
        _ => Body::Special,
    };
    let rdev = match file_type {
        FileType::CharDevice | FileType::BlockDevice => node.meta.rdev,
        _ => 0,
    };
    Ok(ObjNode {
        file_type,
        attrs: Attrs::of(&node.meta),
        rdev,
        body,
        names: 1,
        lower_nlink: node.meta.nlink,
        in_upper: false,
    })
}

fn read_file(layer: &dyn Layer, path: &LayerPath) -> Result<FileData> {
    // A memory layer hands its data over shared (holes stay holes).
    if let Some(mem) = layer.as_any().downcast_ref::<MemLayer>() {
        return mem.file_data(path);
    }
    let mut data = FileData::new();
    let mut offset = 0u64;
    loop {
        let chunk = layer.read_at(path, offset, 1 << 20)?;
        if chunk.is_empty() {
            return Ok(data);
        }
        let len = chunk.len() as u64;
        data.write_bytes_at(offset, chunk);
        offset += len;
    }
}
