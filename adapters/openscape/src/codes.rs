//! The return codes of the IVR API (seed 000 chapter 5, Table 26) with their texts in
//! English (seed 000) and French (seed 001).

/// The language of the return-code texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Fr,
}

impl Lang {
    /// From an `Accept-Language` header: French when `fr` is preferred over `en`, in the
    /// order the header lists them (quality values are not weighed; IVRs send one tag).
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        header.split(',').find_map(|part| {
            let tag = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if tag == "fr" || tag.starts_with("fr-") {
                Some(Lang::Fr)
            } else if tag == "en" || tag.starts_with("en-") {
                Some(Lang::En)
            } else {
                None
            }
        })
    }

    pub fn from_setting(value: &str) -> Option<Lang> {
        match value {
            "en" => Some(Lang::En),
            "fr" => Some(Lang::Fr),
            _ => None,
        }
    }
}

pub const OK: i32 = 0;
pub const NOT_INITIALIZED: i32 = -304;
pub const UNKNOWN_ERROR: i32 = -305;
pub const BAD_PARAMETER: i32 = -306;
pub const KEY_NOT_SET: i32 = -307;
pub const NO_CALL_INFO: i32 = -308;
pub const UNMONITORED_ONLY: i32 = -310;
pub const MONITORED_ONLY: i32 = -311;
pub const WRONG_SEQUENCE: i32 = -312;
pub const BUSINESS_UNIT_SET: i32 = -313;
pub const BAD_BUSINESS_UNIT: i32 = -314;
pub const LOW_RESOURCES: i32 = -400;
pub const TIMED_OUT: i32 = -701;
pub const NO_CONNECTION: i32 = -801;
pub const NO_STATUS_INFO: i32 = -901;
pub const UNKNOWN_CALL: i32 = -903;
pub const UNKNOWN_AGENT: i32 = -904;
pub const UNKNOWN_QUEUE: i32 = -905;
pub const TSERVER_ENQUEUE: i32 = -907;
pub const TSERVER_DOWN: i32 = -908;
pub const UNKNOWN_DEVICE: i32 = -909;
pub const BAD_TO_DEVICE: i32 = -913;
pub const FAILED: i32 = -914;
pub const NO_ROUTING: i32 = -915;
pub const WORKFLOW_ERROR: i32 = -916;
pub const UNTRANSLATABLE: i32 = -917;
pub const TRANSIT_BUSY: i32 = -927;
pub const NO_TRANSIT: i32 = -928;
pub const TRANSIT_NONE_CONFIGURED: i32 = -929;
pub const NOT_MULTITENANT: i32 = -955;
pub const CB_DUPLICATE: i32 = -1006;
pub const CB_INVALID_ID: i32 = -1021;
pub const CB_INVALID_TIME: i32 = -1028;
pub const CB_NO_OVERLAP: i32 = -1029;
pub const CB_EXCLUDED: i32 = -1031;
pub const CB_DATA_TOO_LONG: i32 = -1033;
pub const CB_ALL_EXPIRED: i32 = -1040;
pub const CB_BAD_QUEUE: i32 = -1045;
pub const CB_TOO_FAR: i32 = -1047;

/// Which reading of a positive code: QueryCallStatus and QueryRoutingInfo give 0-2 different
/// meanings (Table 26 lists both under one code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Plain,
    CallStatus,
    Routing,
}

/// The text of a return code. Unknown codes get the "Other" row.
pub fn text(code: i32, context: Context, lang: Lang) -> &'static str {
    let (en, fr) = texts(code, context);
    match lang {
        Lang::En => en,
        Lang::Fr => fr,
    }
}

fn texts(code: i32, context: Context) -> (&'static str, &'static str) {
    match (code, context) {
        (0, Context::CallStatus) => ("The call is idle.", "L'appel est inactif."),
        (0, Context::Routing) => (
            "Successful. Indicates that the call must be enqueued with the returned information.",
            "Abouti. Indique que l'appel doit être mis en file d'attente avec l'information retournée.",
        ),
        (0, _) => ("Successful.", "Abouti."),
        (1, Context::Routing) => (
            "Successful. Indicates that the call must be disconnected.",
            "Abouti. Indique que l'appel doit être déconnecté.",
        ),
        (2, Context::Routing) => (
            "Successful. Indicates that the call must be transferred to the returned target.",
            "Abouti. Indique que l'appel doit être transféré à la cible renvoyée.",
        ),
        (1, _) => (
            "The call is in Queued state. In this case, continue checking the call status.",
            "Indique que l'appel est à l'état En file d'attente. Dans ce cas, continuez de vérifier l'état des appels.",
        ),
        (2, _) => (
            "The call is in Pending state. In this case, transfer the call to the returned extension.",
            "Indique que l'appel est à l'état En attente. Dans ce cas, transférez l'appel au poste renvoyé.",
        ),
        (3, _) => (
            "The call is in Unanswered state. In this case, transfer the call to the returned extension or to another time-out extension.",
            "Indique que l'appel est à l'état Sans réponse. Dans ce cas, transférez l'appel au poste renvoyé ou à un autre poste de dépassement du délai.",
        ),
        (4, _) => (
            "An error has occurred. In this case, transfer the call to a non-OpenScape Contact Center extension.",
            "Indique qu'une erreur s'est produite. Dans ce cas, transférez l'appel à un poste non-OpenScape Contact Center.",
        ),
        // Seed 001 prints "QueryRoutingInfo" against code 5; the meaning is QueryCallStatus's
        // (seed errata).
        (5, _) => ("The call must be disconnected.", "L'appel doit être déconnecté."),
        (6, _) => (
            "The call must be transferred to the returned extension.",
            "L'appel doit être transféré au poste renvoyé.",
        ),
        (-304, _) => (
            "Initialize was not called before invoking this function. You should call Initialize at the start of your script.",
            "Initialize n'a pas été appelé avant d'invoquer cette fonction. Vous devez appeler Initialize au démarrage de votre script.",
        ),
        (-305, _) => (
            "This code indicates an unknown error (for example, user error or the system is unstable).",
            "Ce code correspond à une erreur inconnue (par exemple erreur utilisateur ou système instable).",
        ),
        (-306, _) => (
            "One or more of the parameters is either incorrect or is of the wrong type.",
            "Un ou plusieurs des paramètres passés par valeur étaient de type incorrect ou contenaient une valeur incorrecte. Par exemple, une chaîne a été passée au lieu d'un nombre entier.",
        ),
        (-307, _) => (
            "The key name for the contact data value was not set prior to invoking this function.",
            "Le nom du code pour la valeur des données du contact n'a pas été défini avant d'appeler cette fonction.",
        ),
        (-308, _) => (
            "QueryCallInfo was not called prior to invoking this function. You must call QueryCallInfo to obtain the CallID.",
            "QueryCallInfo n'a pas été appelé avant d'invoquer cette fonction. Vous devez appeler QueryCallInfo pour obtenir l'ID de l'appel.",
        ),
        (-310, _) => (
            "This function can only be used for unmonitored IVR calls.",
            "Cette fonction ne peut être utilisée que pour les appels SVI non surveillés.",
        ),
        (-311, _) => (
            "The function does not support unmonitored IVR calls.",
            "La fonction ne prend pas en charge des appels SVI non surveillés.",
        ),
        (-312, _) => (
            "Wrong sequence of operations (for example, SetCallInfo called after QueryCallInfo).",
            "Séquence incorrecte des opérations (par exemple, SetCallInfo est appelé après QueryCallInfo).",
        ),
        (-313, _) => (
            "The SetBusinessUnit function was already called for this call. (This error is applicable only when OpenScape Contact Center is configured as a multitenant system.)",
            "La fonction SetBusinessUnit a déjà été appelée pour cet appel. (Cette erreur n'est applicable que si OpenScape Contact Center est configuré en tant que système multisociétés.)",
        ),
        (-314, _) => (
            "The specified business unit name was not set or it did not match the name of any business unit in the database. (This error is applicable only when OpenScape Contact Center is configured as a multitenant system.)",
            "Le nom spécifié de l'unité opérationnelle n'est pas défini ou ne correspond à aucun nom d'unité opérationnelle dans la base de données. (Cette erreur n'est applicable que si OpenScape Contact Center est configuré en tant que système multisociétés.)",
        ),
        (-400, _) => (
            "The system has low system resources.",
            "Le système a des ressources système faibles.",
        ),
        (-701, _) => (
            "The request timed out before the function could be completed. It may be an indication of network problems or a busy server.",
            "La demande a dépassé le délai avant que la fonction ne se soit être terminée. Cela peut être l'indication de problèmes du réseau ou le serveur peut être occupé.",
        ),
        (-801, _) => (
            "Unable to connect to one of the OpenScape Contact Center servers. Either the server name is invalid or the server is not operational.",
            "Impossible de se connecter à l'un des serveurs d'OpenScape Contact Center. Soit le nom du serveur n'est pas valide soit le serveur n'est pas opérationnel.",
        ),
        (-901, _) => (
            "There was no status information available. The Administration Server is not operational but the Routing Server is still available. In this case, the status of the other servers is unknown. This error is returned only by the QuerySystemStatus function.",
            "Aucune information d'état n'est disponible. Le serveur d'administration n'est pas opérationnel mais le serveur d'acheminement est toujours disponible. Dans ce cas, l'état des autres serveurs est inconnu. Cette erreur est renvoyée seulement par la fonction QuerySystemStatus.",
        ),
        (-903, _) => (
            "There was no call associated with the specified CallID. Ensure that all IVR extensions are represented in the database.",
            "Aucun appel n'est associé à l'identification d'appel spécifiée (CallID). Assurez-vous que tous les postes SVI sont représentés dans la base de données.",
        ),
        (-904, _) => (
            "The specified agent ID did not match the ID of any user in the database.",
            "L'ID de l'agent spécifiée ne correspond à aucune ID d'agent dans la base de données d'administration.",
        ),
        (-905, _) => (
            "The specified queue did not match the name of any queue in the database.",
            "La file d'attente spécifiée ne correspond à aucun nom de file d'attente dans la base de données d'administration.",
        ),
        (-907, _) => (
            "The T-Server is not available. This error means the Routing Server could not enqueue the call because the T-Server was not available.",
            "Le serveur T n'est disponible. L'erreur signifie que le serveur d'acheminement n'a pas pu placer l'appel en file d'attente car le serveur T n'est pas disponible.",
        ),
        (-908, _) => ("The T-Server is not available.", "Le Serveur T n'est pas disponible."),
        (-909, _) => (
            "The specified device did not match any device in the database.",
            "L'appareil spécifié ne correspond à aucun appareil dans la base de données d'administration.",
        ),
        (-910, _) => (
            "The version of the IVR API DLL does not correspond to the version of OpenScape Contact Center.",
            "La version de l'API SVI DLL ne correspond pas à la version d'OpenScape Contact Center.",
        ),
        (-911, _) => (
            "The function contained data that became corrupted for an unknown reason. The function was therefore unable to connect with the Routing Server. The function was unsuccessful.",
            "La fonction contenait des données qui sont devenues corrompues pour un motif inconnu. La fonction n'a donc pas pu se reconnecter au serveur d'acheminement. La fonction a échoué.",
        ),
        (-913, _) => (
            "The function passed a \"To Device\" that was not valid.",
            "La fonction a passé un \"To Device\" qui n'était pas valable.",
        ),
        (-914, _) => (
            "The operation you are attempting has failed.",
            "L'opération tentée a échoué.",
        ),
        (-915, _) => (
            "Unable to determine the queue and other routing information.",
            "Impossible de récupérer la file d'attente et d'autres informations d'acheminement basées sur l'option d'acheminement configurée du système.",
        ),
        (-916, _) => (
            "The Routing Server encountered an error in the flow execution.",
            "Une erreur s'est produite dans le serveur d'acheminement pendant l'exécution du flux de travail.",
        ),
        (-917, _) => (
            "The telephone number cannot be translated correctly by TAPI.",
            "Erreur dans la conversion TAPI.",
        ),
        (-927, _) => (
            "All registered transit numbers are busy.",
            "Tous les numéros enregistrés d'acheminement sont occupés.",
        ),
        (-928, _) => (
            "No transit number has been allocated for this CallID.",
            "Aucun numéro d'acheminement n'a été associé à cette ID d'appel.",
        ),
        (-929, _) => (
            "No transit numbers have been configured.",
            "Aucun numéro d'acheminement n'a été configuré.",
        ),
        (-931, _) => (
            "There is an inconsistency monitoring the type of call between the IVR API and the T-Server.",
            "Il existe une incohérence dans la surveillance du type de l'appel entre l'API SVI et le serveur T.",
        ),
        (-955, _) => (
            "The multitenancy feature is not licensed.",
            "Aucune licence n'a été achetée pour la fonction multisociétés.",
        ),
        (-1006, _) => (
            "You are attempting to create a duplicate callback.",
            "Vous essayez de créer un rappel dupliqué.",
        ),
        (-1021, _) => ("Invalid CallbackID.", "Identification d'appel non valide."),
        (-1028, _) => (
            "A schedule time is invalid.",
            "Une heure de programmation n'est pas valable.",
        ),
        (-1029, _) => (
            "The callback schedules have no mutual time with the contact center open hours.",
            "Les programmations n'ont aucune heure correspondant aux heures d'ouvertures du centre de contacts.",
        ),
        (-1031, _) => (
            "A telephone number in the request is in the excluded numbers list.",
            "Un numéro de téléphone figure dans la liste des numéros exclus.",
        ),
        (-1033, _) => (
            "A callback cannot accept contact data longer than 1000 bytes.",
            "Un rappel ne peut pas accepter des données de contact supérieures à 1000 octets.",
        ),
        (-1040, _) => (
            "All schedules have already expired.",
            "Toutes les programmations ont déjà expiré.",
        ),
        (-1045, _) => (
            "The callback queue name is invalid.",
            "Le nom de la file d'attente des rappels n'est pas valable.",
        ),
        (-1047, _) => (
            "The schedule contains a date that is too far in the future.",
            "La planification comprend une date située trop loin dans le futur.",
        ),
        _ => (
            "Any other negative code indicates failure.",
            "Tout autre code négatif indique un échec.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_26_code_has_both_texts() {
        let table = [
            -304, -305, -306, -307, -308, -310, -311, -312, -313, -314, -400, -701, -801, -901,
            -903, -904, -905, -907, -908, -909, -910, -911, -913, -914, -915, -916, -917, -927,
            -928, -929, -931, -955, -1006, -1021, -1028, -1029, -1031, -1033, -1040, -1045, -1047,
        ];
        let other = text(-9999, Context::Plain, Lang::En);
        for code in table {
            assert_ne!(text(code, Context::Plain, Lang::En), other, "{code}");
            assert_ne!(
                text(code, Context::Plain, Lang::Fr),
                text(code, Context::Plain, Lang::En),
                "{code}"
            );
        }
        assert_eq!(
            text(-1021, Context::Plain, Lang::Fr),
            "Identification d'appel non valide."
        );
    }

    #[test]
    fn positive_codes_depend_on_the_function() {
        assert!(text(1, Context::CallStatus, Lang::En).contains("Queued"));
        assert!(text(1, Context::Routing, Lang::En).contains("disconnected"));
        assert_eq!(text(0, Context::Plain, Lang::Fr), "Abouti.");
    }

    #[test]
    fn accept_language() {
        assert_eq!(Lang::from_accept_language("fr"), Some(Lang::Fr));
        assert_eq!(
            Lang::from_accept_language("fr-CA, en;q=0.5"),
            Some(Lang::Fr)
        );
        assert_eq!(Lang::from_accept_language("de, en"), Some(Lang::En));
        assert_eq!(Lang::from_accept_language("de"), None);
    }
}
