use super::*;

fn raw(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
        .collect()
}

#[test]
fn namespaces_have_the_kernels_prefixes() {
    assert_eq!(OverlayXattrs::Trusted.prefix(), "trusted.overlay.");
    assert_eq!(OverlayXattrs::User.prefix(), "user.overlay.");
    assert_eq!(OverlayXattrs::default(), OverlayXattrs::Trusted);
    assert_eq!(
        OverlayXattrs::Trusted.name(OverlayAttr::Opaque),
        "trusted.overlay.opaque"
    );
    assert_eq!(
        OverlayXattrs::User.name(OverlayAttr::Redirect),
        "user.overlay.redirect"
    );
    assert_eq!(
        OverlayXattrs::User.name(OverlayAttr::Whiteout),
        "user.overlay.whiteout"
    );
    assert_eq!(
        OverlayXattrs::Trusted.name(OverlayAttr::Metacopy),
        "trusted.overlay.metacopy"
    );
}

#[test]
fn find_reads_only_its_own_namespace_and_exact_key() {
    let stored = raw(&[
        ("user.overlay.opaque", b"x"),
        ("trusted.overlay.overlay.opaque", b"user's"),
        ("trusted.overlay.opaque", b"y"),
        ("trusted.overlay.redirect", b"/a/b"),
    ]);
    let t = OverlayXattrs::Trusted;
    assert_eq!(t.find(&stored, OverlayAttr::Opaque), Some(&b"y"[..]));
    assert_eq!(t.find(&stored, OverlayAttr::Redirect), Some(&b"/a/b"[..]));
    assert_eq!(t.find(&stored, OverlayAttr::Whiteout), None);
    let u = OverlayXattrs::User;
    assert_eq!(u.find(&stored, OverlayAttr::Opaque), Some(&b"x"[..]));
    assert_eq!(u.find(&stored, OverlayAttr::Redirect), None);
}

#[test]
fn escaping_round_trips_and_hides_bookkeeping() {
    for ns in [OverlayXattrs::Trusted, OverlayXattrs::User] {
        let p = ns.prefix();
        for user in [
            format!("{p}opaque"),
            format!("{p}overlay.x"),
            "user.mime".to_owned(),
            "security.capability".to_owned(),
        ] {
            let stored = ns.stored_name(&user);
            assert_eq!(ns.visible_name(&stored).as_deref(), Some(user.as_str()));
        }
        assert_eq!(
            ns.stored_name(&format!("{p}origin")),
            format!("{p}overlay.origin")
        );
        for bookkeeping in ["origin", "impure", "uuid", "nlink", "opaque", "redirect"] {
            assert_eq!(ns.visible_name(&format!("{p}{bookkeeping}")), None);
        }
    }
    // The other namespace is plain data to this one.
    assert_eq!(
        OverlayXattrs::Trusted
            .visible_name("user.overlay.opaque")
            .as_deref(),
        Some("user.overlay.opaque")
    );
    assert_eq!(
        OverlayXattrs::User.stored_name("trusted.overlay.opaque"),
        "trusted.overlay.opaque"
    );
}

#[test]
fn bookkeeping_is_either_overlay_namespace() {
    for name in [
        "trusted.overlay.opaque",
        "trusted.overlay.overlay.x",
        "user.overlay.origin",
        "user.overlay.",
    ] {
        assert!(is_bookkeeping_xattr(name), "{name}");
    }
    for name in [
        "trusted.overlayx",
        "user.overlay",
        "security.overlay.opaque",
        "user.mime",
        "trusted.md5",
    ] {
        assert!(!is_bookkeeping_xattr(name), "{name}");
    }
}

#[test]
fn whiteout_device_is_zero_zero_only() {
    assert!(is_whiteout_device(0, 0));
    assert!(!is_whiteout_device(0, 1));
    assert!(!is_whiteout_device(1, 0));
    assert!(!is_whiteout_device(1, 3));
}

#[test]
fn opaque_values() {
    assert_eq!(Opaque::parse(None), Opaque::No);
    assert_eq!(Opaque::parse(Some(b"y")), Opaque::Yes);
    assert_eq!(Opaque::parse(Some(b"x")), Opaque::XattrWhiteouts);
    assert_eq!(Opaque::parse(Some(b"Y")), Opaque::No);
    assert_eq!(Opaque::parse(Some(b"yy")), Opaque::No);
    assert_eq!(Opaque::parse(Some(b"")), Opaque::No);
    for o in [Opaque::No, Opaque::Yes, Opaque::XattrWhiteouts] {
        assert_eq!(Opaque::parse(o.value()), o);
    }
}

#[test]
fn redirects_parse_as_the_kernel_follows_them() {
    let target = |stored: &[u8]| Redirect::parse(stored).target().said();
    assert_eq!(target(b"b"), Said::Name("b".into()));
    assert_eq!(target(b".wh.b"), Said::Name(".wh.b".into()));
    assert_eq!(
        target(b"/a/b"),
        Said::Absolute(LayerPath::new("a/b").unwrap())
    );
    assert_eq!(target(b"/"), Said::Absolute(LayerPath::root()));
    for ignored in ["", ".", "..", "a/b", "a/"] {
        assert_eq!(target(ignored.as_bytes()), Said::Ignored, "{ignored:?}");
    }
    for invalid in ["/a/../b", "//a", "/a/", "/./a", "/a\0b"] {
        assert_eq!(target(invalid.as_bytes()), Said::Invalid, "{invalid:?}");
    }
    assert!(Redirect::parse(b"/a").is_absolute());
    assert!(Redirect::parse(b"/..").is_absolute());
    assert!(!Redirect::parse(b"a").is_absolute());
    assert!(!Redirect::parse(b"a/b").is_absolute());
    // A redirect is a path: bytes, as the kernel stores them.
    assert_eq!(target(b"caf\xe9"), Said::Name(b"caf\xe9".as_slice().into()));
    assert_eq!(
        target(b"/d/\xd0\xd2"),
        Said::Absolute(LayerPath::new(b"d/\xd0\xd2").unwrap())
    );
}

#[test]
fn every_redirect_keeps_its_stored_bytes() {
    let all: [&[u8]; 16] = [
        b"b",
        b"caf\xe9",
        b"/a/b",
        b"/",
        b"",
        b".",
        b"..",
        b"a/b",
        b"a/",
        b"/a/../b",
        b"//a",
        b"/a/",
        b"/./a",
        b"/a\0b",
        b"//",
        b"/d/\xd0\xd2",
    ];
    for stored in all {
        let r = Redirect::parse(stored);
        assert_eq!(r.to_bytes().as_ref(), stored, "{r:?}");
        assert_eq!(Redirect::parse(&*r.to_bytes()), r, "{r:?}");
    }
    // Two unfollowed values stay two values.
    assert_ne!(Redirect::parse(b"a/b"), Redirect::parse(b"a/c"));
    assert_ne!(Redirect::parse(b"//a"), Redirect::parse(b"//b"));
    assert_eq!(Redirect::parse(b"/d/\xe9").to_string(), "/d/\\351");
}

/// What a target says, owned, so tests compare it with literals.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Name(NameBuf),
    Absolute(LayerPath),
    Ignored,
    Invalid,
}

impl RedirectTarget<'_> {
    fn said(self) -> Said {
        match self {
            RedirectTarget::Name(n) => Said::Name(n.to_owned()),
            RedirectTarget::Absolute(p) => Said::Absolute(p.clone()),
            RedirectTarget::Ignored => Said::Ignored,
            RedirectTarget::Invalid => Said::Invalid,
        }
    }
}
